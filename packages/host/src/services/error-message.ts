/** An error's message for a log line or a stored reason (a thrown non-Error as its string). */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
