/** Progress output: a redrawn bar on a TTY, plain lines otherwise (CI logs, pipes). */
export interface ProgressReporter {
  update(index: number, total: number, message: string): void;
  done(message: string): void;
}

export function progressReporter(stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  if (!stream.isTTY) {
    let last = '';
    return {
      update(index, total, message) {
        const line = `[${index}/${total}] ${message}`;
        if (line !== last) stream.write(line + '\n');
        last = line;
      },
      done(message) {
        stream.write(message + '\n');
      },
    };
  }
  const width = 24;
  return {
    update(index, total, message) {
      const filled = Math.round((Math.max(0, index - 1) / total) * width);
      const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
      const columns = stream.columns ?? 100;
      stream.write(`\r\x1b[2K[${bar}] ${index}/${total} ${message}`.slice(0, columns + 4));
    },
    done(message) {
      stream.write(`\r\x1b[2K${message}\n`);
    },
  };
}
