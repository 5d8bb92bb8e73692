/** Settles when `promise` does or after `ms`, whichever is first; the timer keeps no process alive. */
export function within(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise((resolve) => {
    timer = setTimeout(resolve, ms);
    timer.unref();
  });
  return Promise.race([promise, elapsed]).finally(() => clearTimeout(timer));
}
