import { spawn } from 'node:child_process';
import { AgentboxError } from '@agentbox/protocol';
import { runCommand } from '@agentbox/vm';

/**
 * Debian packages the host needs: QEMU, the tools the image builder runs, and what building the
 * guest kernel from Debian's source package and the static spawn helper takes.
 */
export const HOST_PACKAGES = [
  'qemu-system-x86',
  'qemu-utils',
  'mmdebstrap',
  'busybox-static',
  'e2fsprogs',
  'cpio',
  'gzip',
  'xz-utils',
  'ca-certificates',
  'gcc',
  'libc6-dev',
  'make',
  'flex',
  'bison',
  'bc',
  'libelf-dev',
  'libssl-dev',
] as const;

export async function missingPackages(packages: readonly string[] = HOST_PACKAGES): Promise<string[]> {
  const missing: string[] = [];
  for (const pkg of packages) {
    const status = await runCommand('dpkg-query', ['-W', '-f', '${Status}', pkg]).catch(() => ({
      stdout: '',
    }));
    if (!status.stdout.includes('install ok installed')) missing.push(pkg);
  }
  return missing;
}

function aptGet(args: string[], onLine: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('apt-get', args, {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tail = '';
    const collect = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      tail = (tail + text).slice(-2000);
      for (const line of text.split('\n')) if (line.trim()) onLine(line.trim());
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', () =>
      reject(
        new AgentboxError(
          'prerequisite_missing',
          'apt-get is not available; agentbox setup needs Debian or Ubuntu',
        ),
      ),
    );
    child.on('close', (code) =>
      code === 0
        ? resolve()
        : reject(
            new AgentboxError(
              'prerequisite_missing',
              `apt-get ${args[0]} failed (exit ${code}): ${tail.trim().split('\n').pop()}`,
            ),
          ),
    );
  });
}

/** Installs what is missing, and nothing when everything is there (idempotent, no network then). */
export async function installPackages(onLine: (line: string) => void): Promise<{ installed: string[] }> {
  const missing = await missingPackages();
  if (missing.length === 0) return { installed: [] };
  if (process.getuid?.() !== 0) {
    throw new AgentboxError(
      'prerequisite_missing',
      `missing packages ${missing.join(' ')}; run \`sudo agentbox setup\``,
    );
  }
  onLine(`installing ${missing.join(' ')}`);
  await aptGet(['update', '-qq'], onLine);
  await aptGet(['install', '-y', '-qq', ...missing], onLine);
  return { installed: missing };
}
