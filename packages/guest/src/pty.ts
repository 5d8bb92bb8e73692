import { spawn } from 'node:child_process';
import fs from 'node:fs';
import type { Writable } from 'node:stream';
import { PtyResizeSchema, type ExecExit, type ParsedRequest } from '@agentbox/protocol';
import { GuestOpError, type RequestContext } from './context.js';
import { signalName, superviseGroup, type ExecDefaults } from './exec.js';

type ExecRequest = Extract<ParsedRequest, { op: 'exec' }>;

/**
 * The pty helper, run by the image's python3 (node has no pty and native addons do not fit the
 * one-file agent). argv: rows cols program args…. It forks the program on a new pseudo-terminal
 * (its controlling tty, so Ctrl-C typed on stdin becomes SIGINT for the foreground job), relays
 * stdin → terminal and terminal → stdout, applies `rows cols` lines read on fd 3 as window sizes
 * (the kernel then sends SIGWINCH), and ends the way the program ended (its code, or its signal).
 */
export const PTY_HELPER = String.raw`
import errno, fcntl, os, pty, select, signal, struct, sys, termios
rows, cols, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def setsize(fd, r, c):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', r, c, 0, 0))
pid, master = pty.fork()
if pid == 0:
    setsize(0, rows, cols)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        os.write(2, ('agentbox: %s: command not found\r\n' % argv[0]).encode()); os._exit(127)
    except OSError as e:
        os.write(2, ('agentbox: %s: %s\r\n' % (argv[0], e.strerror)).encode()); os._exit(126)
setsize(master, rows, cols)
inputs = [master, 0, 3]
control = b''
status = None
def out(data):
    while data:
        n = os.write(1, data); data = data[n:]
while True:
    if status is None:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p == pid: status = st
    try:
        ready = select.select(inputs, [], [], 0 if status is not None else 0.2)[0]
    except InterruptedError:
        continue
    if status is not None and master not in ready:
        break
    if master in ready:
        try:
            data = os.read(master, 65536)
        except OSError as e:
            if e.errno != errno.EIO: raise
            data = b''
        if not data:
            if status is None: status = os.waitpid(pid, 0)[1]
            break
        out(data)
    if 0 in ready:
        data = os.read(0, 65536)
        if data: os.write(master, data)
        else: inputs.remove(0)
    if 3 in ready:
        data = os.read(3, 4096)
        if not data: inputs.remove(3); continue
        control += data
        while b'\n' in control:
            line, control = control.split(b'\n', 1)
            try:
                r, c = (int(x) for x in line.split())
                setsize(master, r, c)
            except (ValueError, OSError):
                pass
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
`;

/**
 * exec on a pseudo-terminal: like runExec, but the program gets a tty (`req.pty` gives its size),
 * its output (stdout and stderr merged by the terminal) is streamed as stdout, and `resize`
 * messages on the channel change the window size.
 */
export async function runPtyExec(
  req: ExecRequest,
  ctx: RequestContext,
  defaults: ExecDefaults,
): Promise<ExecExit> {
  const pty = req.pty!;
  const cwd = req.cwd ?? defaults.cwd;
  if (!fs.existsSync(cwd))
    throw new GuestOpError('file_not_found', `working directory ${cwd} does not exist`);
  const started = performance.now();
  const child = spawn('python3', ['-c', PTY_HELPER, String(pty.rows), String(pty.cols), ...req.argv], {
    cwd,
    env: { TERM: 'xterm-256color', ...defaults.env, ...req.env },
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
  });
  // The helper's group; the program is in its own session and gets SIGHUP when the terminal closes.
  const group = superviseGroup(child.pid, ctx, req.timeoutMs);
  const killGroup = group.kill;

  const control = child.stdio[3] as Writable;
  control.on('error', () => undefined);
  ctx.onControl((message) => {
    const resize = PtyResizeSchema.safeParse(message);
    if (resize.success) control.write(`${resize.data.rows} ${resize.data.cols}\n`);
  });
  for (const [stream, source] of [
    ['data', child.stdout],
    ['stderr', child.stderr],
  ] as const) {
    source.on('data', (chunk: Buffer) => {
      source.pause();
      ctx.mux.sendData(ctx.channel, stream, chunk).then(
        () => source.resume(),
        () => killGroup(),
      );
    });
  }
  const stdin = child.stdin;
  stdin.on('error', () => undefined);
  ctx.onData(
    (chunk) => stdin.write(chunk, () => ctx.mux.consumed(ctx.channel, chunk.length)),
    () => stdin.end(),
  );

  return new Promise<ExecExit>((resolve, reject) => {
    child.once('error', (err) => {
      group.done();
      reject(new GuestOpError('guest_error', `could not start the pty helper (python3): ${err.message}`));
    });
    child.once('close', (exitCode, signal) => {
      group.done();
      control.destroy();
      resolve({
        type: 'exit',
        exitCode,
        signal: signal === null ? null : signalName(signal),
        timedOut: group.timedOut(),
        durationMs: performance.now() - started,
      });
    });
  });
}
