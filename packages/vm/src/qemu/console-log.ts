import fs from 'node:fs';

/*
 * The guest's serial console goes to a file in the box's directory (boot messages, for the error a
 * failed boot reports). Root in the guest can write to it without end, so the host keeps it short:
 * QEMU appends (O_APPEND), and the daemon cuts the file back to its tail when it grows too long.
 */

/** A console log longer than this is cut back to its last CONSOLE_LOG_KEEP_BYTES. */
export const CONSOLE_LOG_MAX_BYTES = 4 * 1024 * 1024;
export const CONSOLE_LOG_KEEP_BYTES = 256 * 1024;
/** How often a running VM's console log is looked at. */
export const CONSOLE_LOG_CHECK_MS = 30_000;

/** QEMU arguments for the serial console into `file`, appended (so a cut file stays dense). */
export function consoleArgs(file: string): string[] {
  // Commas separate chardev options: one in the path is written twice.
  return [
    '-chardev',
    `file,id=console,path=${file.replaceAll(',', ',,')},append=on`,
    '-serial',
    'chardev:console',
  ];
}

/** Cuts `file` to its last `keep` bytes when it is longer than `max`; a missing file is fine. */
export function trimConsoleLog(
  file: string,
  max = CONSOLE_LOG_MAX_BYTES,
  keep = CONSOLE_LOG_KEEP_BYTES,
): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW);
  } catch {
    return false;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size <= max) return false;
    const tail = Buffer.alloc(keep);
    const read = fs.readSync(fd, tail, 0, keep, size - keep);
    // Same inode (QEMU holds it open): emptied, then the tail put back. Lines QEMU appends in
    // between are lost, which a console log can afford.
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, tail.subarray(0, read));
    return true;
  } finally {
    fs.closeSync(fd);
  }
}

/** Trims `file` every CONSOLE_LOG_CHECK_MS until the returned function is called. */
export function watchConsoleLog(file: string, everyMs = CONSOLE_LOG_CHECK_MS): () => void {
  const timer = setInterval(() => trimConsoleLog(file), everyMs).unref();
  return () => clearInterval(timer);
}
