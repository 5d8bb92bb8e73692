import { describe, expect, it } from 'vitest';
import { KERNEL_CONFIG, missingOptions, requiredOptions } from '../../src/image/kernel-config.js';

describe('guest kernel configuration', () => {
  const required = requiredOptions(KERNEL_CONFIG);

  it('builds in what boxes rely on, and no module loader', () => {
    for (const option of [
      'CONFIG_PVH',
      'CONFIG_VIRTIO_MMIO',
      'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES',
      'CONFIG_VIRTIO_BLK',
      'CONFIG_VIRTIO_CONSOLE',
      'CONFIG_EXT4_FS',
      'CONFIG_9P_FS',
      'CONFIG_NET_9P_VIRTIO',
      'CONFIG_VIRTIO_FS',
      'CONFIG_OVERLAY_FS',
      'CONFIG_DEVTMPFS',
      'CONFIG_UNIX98_PTYS',
      'CONFIG_INET',
      'CONFIG_IPV6',
      'CONFIG_SECCOMP_FILTER',
      'CONFIG_USER_NS',
      'CONFIG_KVM_GUEST',
    ])
      expect(required).toContain(option);
    expect(KERNEL_CONFIG).toMatch(/^CONFIG_MODULES=n$/m);
    expect(KERNEL_CONFIG).toMatch(/^CONFIG_ACPI=n$/m);
  });

  it('names every option once', () => {
    const names = KERNEL_CONFIG.split('\n')
      .map((l) => /^(CONFIG_[A-Z0-9_]+)=/.exec(l.trim())?.[1])
      .filter((n): n is string => n !== undefined);
    expect(new Set(names).size).toBe(names.length);
  });

  it('finds the options a generated .config failed to set', () => {
    const dotConfig = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_D="x"\n';
    expect(missingOptions(dotConfig, ['CONFIG_A', 'CONFIG_B', 'CONFIG_C'])).toEqual(['CONFIG_B', 'CONFIG_C']);
    expect(requiredOptions('CONFIG_A=y\n# CONFIG_B=y\nCONFIG_C=n\n  CONFIG_D=y  \n')).toEqual([
      'CONFIG_A',
      'CONFIG_D',
    ]);
  });
});
