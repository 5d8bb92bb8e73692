import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { caFingerprint, caInstallArgv } from '../../src/services/box-egress.js';

// The script runs in the guest's /bin/sh (dash, as on this Debian host): run here on real files.
const CA = '-----BEGIN CERTIFICATE-----\nMIIBbox\nca==\n-----END CERTIFICATE-----\n';
const OTHER_CA = '-----BEGIN CERTIFICATE-----\nMIIBother\n-----END CERTIFICATE-----\n';

describe('installing the box CA into the guest trust bundle (shell built-ins only)', () => {
  let dir: string;
  let paths: { ca: string; bundle: string; mark: string };

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-ca-'));
    paths = {
      ca: path.join(dir, 'ca.pem'),
      bundle: path.join(dir, 'bundle.crt'),
      mark: path.join(dir, 'mark'),
    };
    fs.writeFileSync(paths.bundle, 'SYSTEM CA 1\nSYSTEM CA 2\n');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const install = (pem: string): void => {
    fs.writeFileSync(paths.ca, pem);
    const [cmd, ...args] = caInstallArgv(caFingerprint(pem), paths);
    execFileSync(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  };
  const bundle = () => fs.readFileSync(paths.bundle, 'utf8');

  it('appends the CA after a newline and records its fingerprint', () => {
    install(CA);
    expect(bundle()).toBe(`SYSTEM CA 1\nSYSTEM CA 2\n\n${CA}`);
    expect(fs.readFileSync(paths.mark, 'utf8')).toBe(`${caFingerprint(CA)}\n`);
  });

  it('does not append the same CA twice', () => {
    install(CA);
    install(CA);
    expect(bundle().split('MIIBbox').length - 1).toBe(1);
  });

  it('appends a new CA (a new gateway session) after the old one', () => {
    install(CA);
    install(OTHER_CA);
    expect(bundle()).toBe(`SYSTEM CA 1\nSYSTEM CA 2\n\n${CA}\n${OTHER_CA}`);
  });

  it('appends the CA again to a bundle regenerated since (it may have lost it)', () => {
    install(CA);
    fs.writeFileSync(paths.bundle, 'SYSTEM CA 1\n');
    const later = new Date(Date.now() + 5_000);
    fs.utimesSync(paths.bundle, later, later);
    install(CA);
    expect(bundle()).toBe(`SYSTEM CA 1\n\n${CA}`);
  });

  it('keeps a bundle without a final newline, and a CA without one, parseable', () => {
    fs.writeFileSync(paths.bundle, 'SYSTEM CA');
    install(CA.trimEnd());
    expect(bundle()).toBe(`SYSTEM CA\n${CA}`);
  });

  it('fails, and records nothing, when the bundle cannot be written', () => {
    fs.rmSync(paths.bundle);
    fs.mkdirSync(paths.bundle);
    expect(() => install(CA)).toThrow();
    expect(fs.existsSync(paths.mark)).toBe(false);
  });
});
