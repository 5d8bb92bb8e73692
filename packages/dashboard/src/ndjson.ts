/**
 * Splits streamed text into lines: `push` returns the lines completed by a chunk (a line may be
 * cut anywhere between chunks), `end` the unterminated rest.
 */
export function createLineSplitter() {
  let pending = '';
  return {
    push(chunk: string): string[] {
      pending += chunk;
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      return parts;
    },
    end(): string[] {
      const rest = pending;
      pending = '';
      return rest === '' ? [] : [rest];
    },
  };
}
