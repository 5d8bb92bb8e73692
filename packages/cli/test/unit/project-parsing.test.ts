import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseProcNetTcp } from '../../../guest/src/port-forward.js';
import { shareArgs } from '../../../vm/src/qemu/args.js';
import { agentArgv } from '../../src/commands/project.js';
import { parsePublish } from '../../src/project/port-publish.js';
import {
  mountScript,
  parseMount,
  projectBoxId,
  qemuUserFor,
  reachableByOthers,
  rootMountWarning,
} from '../../src/project/project-box.js';
import { githubRepoOfRemote, parseRepo } from '../../src/project/github-repo.js';
import { projectPolicy } from '../../src/project/project-egress.js';
import { profileLine } from '../../src/main.js';

describe('per-project command parsing', () => {
  it('parses --publish HOST:GUEST, GUEST and ADDR:HOST:GUEST, and refuses the rest', () => {
    expect(parsePublish('18080:8080')).toEqual({
      hostAddress: '127.0.0.1',
      hostPort: 18080,
      guestPort: 8080,
    });
    expect(parsePublish('3000')).toEqual({ hostAddress: '127.0.0.1', hostPort: 3000, guestPort: 3000 });
    expect(parsePublish('0.0.0.0:80:8080')).toEqual({
      hostAddress: '0.0.0.0',
      hostPort: 80,
      guestPort: 8080,
    });
    for (const bad of ['', '0:80', '80:65536', 'a:b', '1:2:3', 'host:1:2', '80:-1', '1e3:80'])
      expect(() => parsePublish(bad), bad).toThrow(/--publish/);
  });

  it('reads GitHub repositories from remote URLs of every form', () => {
    expect(githubRepoOfRemote('https://github.com/acme/widget.git')).toBe('acme/widget');
    expect(githubRepoOfRemote('https://user@github.com/acme/widget')).toBe('acme/widget');
    expect(githubRepoOfRemote('git@github.com:acme/widget.git')).toBe('acme/widget');
    expect(githubRepoOfRemote('ssh://git@github.com/acme/w.x')).toBe('acme/w.x');
    expect(githubRepoOfRemote('https://gitlab.com/acme/widget.git')).toBeUndefined();
    expect(githubRepoOfRemote('https://github.com/acme/widget/extra')).toBeUndefined();
  });

  it('takes --repo as OWNER/NAME or https://github.com/OWNER/NAME, and nothing else', () => {
    for (const good of [
      'acme/widget',
      'Acme/Widget.git',
      'https://github.com/acme/widget',
      'https://github.com/Acme/Widget.git',
      'https://github.com/acme/widget/',
      'HTTPS://GitHub.com/acme/widget',
    ])
      expect(parseRepo(good), good).toBe('acme/widget');
    expect(parseRepo('https://github.com/acme/w.x-y_z')).toBe('acme/w.x-y_z');
    // Already parsed values (runProjectCommand parses again) come back the same.
    expect(parseRepo(parseRepo('https://github.com/Acme/Widget.git'))).toBe('acme/widget');
    for (const bad of [
      '',
      'acme',
      'acme/widget/extra',
      'github.com/acme/widget',
      'http://github.com/acme/widget',
      'https://gitlab.com/acme/widget',
      'https://github.com/acme',
      'https://github.com/acme/widget/tree/main',
      'https://github.com/acme/widget?tab=readme',
      'https://user:token@github.com/acme/widget',
      'git@github.com:acme/widget.git',
      'https://github.com/acme/widget\nx',
    ]) {
      expect(() => parseRepo(bad), bad).toThrow(
        `--repo expects OWNER/NAME or https://github.com/OWNER/NAME, got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('gives a box GitHub only for its repos, and nothing of GitHub with --no-git', () => {
    const base = { agent: 'claude' as const, allowIPs: [], allowLan: false, allowHost: false };
    expect(projectPolicy({ ...base, repos: ['acme/widget'], git: true })).toMatchObject({
      presets: ['npm', 'pypi', 'anthropic', 'github'],
      repos: ['acme/widget'],
    });
    expect(projectPolicy({ ...base, repos: ['acme/widget'], git: false })).toMatchObject({
      presets: ['npm', 'pypi', 'anthropic'],
      repos: [],
    });
  });

  it('parses --mount and derives a stable box id from the project path', () => {
    const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-mount-')));
    try {
      expect(parseMount(dir, '/')).toEqual({ hostPath: dir, guestPath: dir, readOnly: false });
      expect(parseMount(`${dir}:/data:ro`, '/')).toEqual({
        hostPath: dir,
        guestPath: '/data',
        readOnly: true,
      });
      expect(() => parseMount(`${dir}:relative`, '/')).toThrow(/absolute/);
      expect(() => parseMount(`${dir}/missing`, '/')).toThrow(/does not exist/);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
    expect(projectBoxId('/home/me/proj')).toMatch(/^proj-[0-9a-f]{12}$/);
    expect(projectBoxId('/home/me/proj')).toBe(projectBoxId('/home/me/proj'));
    expect(projectBoxId('/home/me/proj')).not.toBe(projectBoxId('/home/me/proj2'));
  });

  it('mounts each share by its tag at its path, quoted', () => {
    const script = mountScript([{ hostPath: "/a b/it's", guestPath: "/a b/it's", readOnly: true }]);
    expect(script).toContain(
      `mountpoint -q '/a b/it'\\''s' || { mkdir -p '/a b/it'\\''s' && mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,ro agentbox0 '/a b/it'\\''s'; }`,
    );
  });

  it('builds the 9p device arguments, escaping commas in host paths', () => {
    expect(
      shareArgs([
        { tag: 'agentbox0', hostPath: '/p,q' },
        { tag: 'agentbox1', hostPath: '/r', readOnly: true },
      ]),
    ).toEqual([
      '-fsdev',
      'local,id=fs0,path=/p,,q,security_model=none',
      '-device',
      'virtio-9p-device,fsdev=fs0,mount_tag=agentbox0',
      '-fsdev',
      'local,id=fs1,path=/r,security_model=none,readonly=on',
      '-device',
      'virtio-9p-device,fsdev=fs1,mount_tag=agentbox1',
    ]);
  });

  it('launches each agent with its permission bypass', () => {
    expect(agentArgv('claude', ['-c'])).toEqual({
      argv: ['claude', '--dangerously-skip-permissions', '-c'],
      env: { IS_SANDBOX: '1' },
    });
    expect(agentArgv('codex', []).argv).toEqual(['codex', '--dangerously-bypass-approvals-and-sandbox']);
    expect(agentArgv('shell', ['-c', 'pwd']).argv).toEqual(['bash', '-c', 'pwd']);
  });

  it('reads LISTEN sockets on wildcard and loopback addresses from /proc/net/tcp, nothing else', () => {
    const v4 = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1',
      '   1: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2',
      '   2: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 3',
      '   3: 0A00020F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4',
      '   4: garbage',
      '   5: 00000000:0000 00000000:0000 0A',
    ].join('\n');
    expect(parseProcNetTcp(v4, false)).toEqual([
      { port: 8080, address: '0.0.0.0' },
      { port: 3128, address: '127.0.0.1' },
    ]);
    const v6 = [
      'header',
      '   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 0',
      '   1: 00000000000000000000000001000000:0BB9 00000000000000000000000000000000:0000 0A 0',
    ].join('\n');
    expect(parseProcNetTcp(v6, true)).toEqual([
      { port: 3000, address: '::' },
      { port: 3001, address: '::1' },
    ]);
  });

  it('names the command in the profile line', () => {
    expect(profileLine(['image', 'build', '--force'], 500, 1500)).toBe(
      'agentbox profile: command="image build" startup=500ms command=1000ms total=1500ms\n',
    );
    expect(profileLine(['run', '-e', 'A=1', '--', 'true'], 10, 20)).toMatch(/command="run"/);
  });
});

describe('a writable mount other users can reach, with QEMU as root', () => {
  const modes: Record<string, number> = {
    '/': 0o755,
    '/srv': 0o755,
    '/srv/app': 0o775,
    '/home': 0o755,
    '/home/me': 0o700,
  };
  const stat = (p: string) => ({ mode: modes[p]! });

  it('is reachable only when every directory down to it lets others through', () => {
    expect(reachableByOthers('/srv/app', stat)).toBe(true);
    expect(reachableByOthers('/home/me', stat)).toBe(false);
  });

  it("QEMU runs as a project's owner when run as root, and the warning is then not needed", () => {
    const owned = () => ({ uid: 1000, gid: 100 });
    expect(qemuUserFor('/srv/app', 0, owned)).toEqual({ uid: 1000, gid: 100 });
    expect(qemuUserFor('/srv/app', 0, () => ({ uid: 0, gid: 0 }))).toBeUndefined();
    expect(qemuUserFor('/srv/app', 1000, owned)).toBeUndefined();
    const mount = { hostPath: '/srv/app', guestPath: '/srv/app', readOnly: false };
    expect(rootMountWarning([mount], 0, { uid: 1000, gid: 100 })).toBeUndefined();
  });

  it('is warned of when running as root only, naming the directories', () => {
    const mounts = [
      {
        hostPath: fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-private-')),
        guestPath: '/p',
        readOnly: false,
      },
    ];
    // mkdtemp makes a 0700 directory: nobody else reaches it.
    expect(rootMountWarning(mounts, 0)).toBeUndefined();
    fs.chmodSync(mounts[0]!.hostPath, 0o755);
    expect(rootMountWarning(mounts, 0)).toMatch(/running as root.*setuid.*agentbox-private-/);
    expect(rootMountWarning(mounts, 1000)).toBeUndefined();
    expect(rootMountWarning([{ ...mounts[0]!, readOnly: true }], 0)).toBeUndefined();
    fs.rmSync(mounts[0]!.hostPath, { recursive: true });
  });
});
