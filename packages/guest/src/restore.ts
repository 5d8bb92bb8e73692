import { spawn, execFile, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import { etcHostsFor, GUEST_AGENT_DIR, type ParsedRequest, type RestoreResult } from '@agentbox/protocol';
import { GuestOpError } from './context.js';
import { RESTORED_CLOCK, RESTORED_ENTROPY, type NativeAddon } from './native.js';

type RestoreRequest = Extract<ParsedRequest, { op: 'system.restore' }>;

/** Where a restored clone's boot id lives; bind-mounted over the kernel's read-only one. */
export const BOOT_ID_FILE = `${GUEST_AGENT_DIR}/boot_id`;
const KERNEL_BOOT_ID = '/proc/sys/kernel/random/boot_id';

/**
 * The restore helper: a small Python process that does the three things node cannot do without a
 * native addon — `clock_settime`, the RNG ioctls and `mount`. It is started before a snapshot
 * (`system.quiesce`), so every clone restored from it has it running already and a restore costs
 * one line each way instead of a process start (~0.3–0.7 s of emulated CPU for Python).
 *
 * Reseeding: writing bytes to /dev/urandom only mixes them into the input pool; since Linux 5.18
 * the output keys (base CRNG) are rebuilt from the pool only every 60 s or on RNDRESEEDCRNG. So the
 * helper credits the host's bytes with RNDADDENTROPY and then forces RNDRESEEDCRNG: the next read
 * of /dev/urandom in any clone comes from a key derived from bytes no other clone has.
 */
export const HELPER_SCRIPT = String.raw`
import ctypes, fcntl, json, socket, struct, sys, time
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
MS_BIND = 4096
libc = ctypes.CDLL(None, use_errno=True)
def bind(src, dst):
    if libc.mount(src.encode(), dst.encode(), None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), 'mount --bind ' + dst)
def mounted(dst):
    with open('/proc/self/mountinfo') as f:
        return any(line.split()[4] == dst for line in f)
sys.stdout.write('ready\n')
sys.stdout.flush()
for line in sys.stdin:
    req = json.loads(line)
    res = {}
    try:
        if 'now' in req:
            time.clock_settime(time.CLOCK_REALTIME, req['now'] + (time.monotonic_ns() - req['mono']) / 1e9)
            res['clockSet'] = True
        if 'entropy' in req:
            data = bytes.fromhex(req['entropy'])
            with open('/dev/urandom', 'wb', 0) as f:
                fcntl.ioctl(f, RNDADDENTROPY, struct.pack('ii', len(data) * 8, len(data)) + data)
                fcntl.ioctl(f, RNDRESEEDCRNG)
            res['reseeded'] = True
        if 'bindBootId' in req:
            src, dst = req['bindBootId']
            if not mounted(dst):
                bind(src, dst)
        if 'hostname' in req:
            socket.sethostname(req['hostname'])
    except Exception as e:
        res['error'] = repr(e)
    sys.stdout.write(json.dumps(res) + '\n')
    sys.stdout.flush()
`;

interface HelperRequest {
  now?: number;
  mono?: number;
  entropy?: string;
  bindBootId?: [string, string];
  hostname?: string;
}

interface HelperReply {
  clockSet?: boolean;
  reseeded?: boolean;
  error?: string;
}

export interface RestoreHelperOptions {
  python?: string;
  startTimeoutMs?: number;
  /** Whether to touch the machine (clock, RNG, mounts); false in unit tests on the host. */
  privileged?: boolean;
}

/** Owns the helper process; one request at a time, in order. */
export class RestoreHelper {
  private child: ChildProcessWithoutNullStreams | undefined;
  private ready: Promise<boolean> | undefined;
  private buffer = '';
  private waiters: ((line: string | undefined) => void)[] = [];
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: RestoreHelperOptions = {}) {}

  /** Starts the helper if it is not running; resolves false when Python is not available. */
  start(): Promise<boolean> {
    if (this.ready && this.child && this.child.exitCode === null) return this.ready;
    this.buffer = '';
    const child = spawn(this.options.python ?? 'python3', ['-u', '-c', HELPER_SCRIPT], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      this.buffer += text;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        this.waiters.shift()?.(line);
      }
    });
    child.stderr.resume();
    const gone = () => {
      if (this.child === child) this.child = undefined;
      for (const w of this.waiters.splice(0)) w(undefined);
    };
    child.once('exit', gone);
    child.once('error', gone);
    const timeoutMs = this.options.startTimeoutMs ?? 30_000;
    this.ready = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.waiters.push((line) => {
        clearTimeout(timer);
        resolve(line === 'ready');
      });
    });
    return this.ready;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null;
  }

  request(req: HelperRequest): Promise<HelperReply | undefined> {
    const run = async (): Promise<HelperReply | undefined> => {
      if (!(await this.start())) return undefined;
      const child = this.child;
      if (!child) return undefined;
      const line = new Promise<string | undefined>((resolve) => this.waiters.push(resolve));
      child.stdin.write(`${JSON.stringify(req)}\n`);
      const text = await line;
      if (text === undefined) return undefined;
      try {
        return JSON.parse(text) as HelperReply;
      } catch {
        return { error: `bad helper reply: ${text.slice(0, 200)}` };
      }
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/**
 * Replaces a small file's content without truncating it to zero first: ext4 then neither frees
 * and reallocates its block nor writes it out at close (auto_da_alloc, its guard for the
 * truncate-and-rewrite pattern). Under emulation that was ~13k guest instructions of ext4 and
 * block code to translate, ~8% of a clone's start. Durability is the page cache's, as before.
 */
export function rewriteInPlace(file: string, text: string): void {
  const data = Buffer.from(text);
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644);
  try {
    fs.writeSync(fd, data, 0, data.length, 0);
    if (fs.fstatSync(fd).size > data.length) fs.ftruncateSync(fd, data.length);
  } finally {
    fs.closeSync(fd);
  }
}

function setClockWithDate(nowSeconds: number): Promise<boolean> {
  return new Promise((resolve) =>
    execFile('date', ['-u', '-s', `@${nowSeconds.toFixed(6)}`], (err) => resolve(!err)),
  );
}

/**
 * Handles `system.restore`: clock first (everything after it sees the right time), then the RNG,
 * then the identity. The native addon does the privileged steps when the agent has it; else the
 * Python helper. Without either the clock is set by `date` and the RNG is only mixed, not
 * reseeded; the result says so.
 */
export async function restore(
  req: RestoreRequest,
  helper: RestoreHelper,
  options: { privileged: boolean; native?: NativeAddon | undefined },
): Promise<RestoreResult> {
  const receivedNs = process.hrtime.bigint();
  const skewMs = Date.now() - req.nowMs;
  if (!options.privileged) {
    return { skewMs, clockSet: false, reseeded: false, bootId: currentBootId(), helperMs: 0 };
  }
  const entropy = req.entropy ? Buffer.from(req.entropy, 'base64') : undefined;
  const mixed = entropy ? Buffer.concat([entropy, Buffer.from(req.nonce ?? '')]) : undefined;
  // Mixing alone is always possible and never hurts; the helper then credits and reseeds.
  if (mixed) fs.writeFileSync('/dev/urandom', mixed);
  if (req.identity) {
    rewriteInPlace(BOOT_ID_FILE, `${req.identity.bootId}\n`);
    rewriteInPlace('/etc/machine-id', `${req.identity.machineId}\n`);
    rewriteInPlace('/etc/hostname', `${req.identity.hostname}\n`);
    // Identity comes only with a template clone, whose file holds just what the template's boot wrote.
    rewriteInPlace('/etc/hosts', etcHostsFor(req.identity.hostname));
  }
  const started = performance.now();
  if (options.native) {
    const { done, error } = options.native.restore(
      req.nowMs,
      receivedNs,
      mixed ?? null,
      req.identity ? [BOOT_ID_FILE, KERNEL_BOOT_ID] : null,
      req.identity?.hostname ?? null,
    );
    if (error) throw new GuestOpError('guest_error', `restore: ${error}`);
    return {
      skewMs,
      clockSet: (done & RESTORED_CLOCK) !== 0,
      reseeded: (done & RESTORED_ENTROPY) !== 0,
      bootId: currentBootId(),
      helperMs: performance.now() - started,
    };
  }
  // A clock-only restore (a resume) does not wait for Python to start: `date` does it now, and
  // the helper starts in the background for the next time.
  if (!mixed && !req.identity && !helper.running) {
    void helper.start();
    const clockSet = await setClockWithDate(
      req.nowMs / 1000 + Number(process.hrtime.bigint() - receivedNs) / 1e9,
    );
    return { skewMs, clockSet, reseeded: false, bootId: currentBootId(), helperMs: 0 };
  }
  const reply = await helper.request({
    now: req.nowMs / 1000,
    mono: Number(receivedNs),
    ...(mixed ? { entropy: mixed.toString('hex') } : {}),
    ...(req.identity
      ? { bindBootId: [BOOT_ID_FILE, KERNEL_BOOT_ID] as [string, string], hostname: req.identity.hostname }
      : {}),
  });
  const helperMs = performance.now() - started;
  if (reply?.error) throw new GuestOpError('guest_error', `restore helper: ${reply.error}`);
  let clockSet = reply?.clockSet ?? false;
  if (!reply) {
    // No helper: `date` sets the clock (one process start); hostname through procfs.
    const elapsedS = Number(process.hrtime.bigint() - receivedNs) / 1e9;
    clockSet = await setClockWithDate(req.nowMs / 1000 + elapsedS);
    if (req.identity) fs.writeFileSync('/proc/sys/kernel/hostname', req.identity.hostname);
  }
  return { skewMs, clockSet, reseeded: reply?.reseeded ?? false, bootId: currentBootId(), helperMs };
}

export function currentBootId(): string {
  try {
    return fs.readFileSync(KERNEL_BOOT_ID, 'utf8').trim();
  } catch {
    return '00000000-0000-0000-0000-000000000000';
  }
}
