import { describe, expect, it } from 'vitest';
import { parseIp } from '@agentbox/protocol';
import {
  checkAddress,
  classifyAddress,
  hostAddressKeys,
  parseAddress,
  type AddressClass,
} from '../../src/index.js';

const HOST_ADDRESSES = new Set(['192.168.1.20', '2a01:4f8::20', '127.0.0.1']);

const TABLE: Array<[string, AddressClass]> = [
  ['8.8.8.8', 'public'],
  ['1.1.1.1', 'public'],
  ['2606:4700:4700::1111', 'public'],
  ['127.0.0.1', 'loopback'], // also a host address: loopback wins
  ['127.255.255.254', 'loopback'],
  ['::1', 'loopback'],
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  ['0:0:0:0:0:ffff:7f00:0001', 'loopback'],
  ['64:ff9b::7f00:1', 'loopback'], // NAT64 of 127.0.0.1
  ['64:ff9b::808:808', 'public'], // NAT64 of 8.8.8.8
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'unspecified'],
  ['::', 'unspecified'],
  ['169.254.169.254', 'metadata'],
  ['::ffff:169.254.169.254', 'metadata'],
  ['169.254.170.2', 'metadata'],
  ['100.100.100.200', 'metadata'],
  ['168.63.129.16', 'metadata'],
  ['fd00:ec2::254', 'metadata'],
  ['169.254.1.1', 'link_local'],
  ['fe80::1', 'link_local'],
  ['fe80::1%eth0', 'link_local'],
  ['febf::1', 'link_local'],
  ['10.0.0.1', 'private'],
  ['10.255.255.255', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['172.32.0.1', 'public'],
  ['172.15.255.255', 'public'],
  ['192.168.0.1', 'private'],
  ['::ffff:10.0.0.1', 'private'],
  ['100.64.0.1', 'cgnat'],
  ['100.127.255.255', 'cgnat'],
  ['100.128.0.1', 'public'],
  ['fc00::1', 'ula'],
  ['fd12:3456::1', 'ula'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['ff02::1', 'multicast'],
  ['255.255.255.255', 'broadcast'],
  ['240.0.0.1', 'reserved'],
  ['192.0.2.1', 'reserved'],
  ['198.18.0.1', 'reserved'],
  ['2001:db8::1', 'reserved'],
  ['::7f00:1', 'reserved'], // deprecated IPv4-compatible form
  ['2002:7f00:1::1', 'reserved'], // 6to4
  ['2001:0:4136:e378::1', 'reserved'], // Teredo
  ['192.168.1.20', 'host'],
  ['::ffff:192.168.1.20', 'host'],
  ['2a01:4f8::20', 'host'],
  ['2a01:4f8:0:0::20', 'host'],
];

describe('address classification', () => {
  it.each(TABLE)('%s is %s', (text, expected) => {
    const ip = parseAddress(text);
    expect(ip).toBeDefined();
    expect(classifyAddress(ip!, HOST_ADDRESSES)).toBe(expected);
  });

  it('covers every class at least once', () => {
    expect(new Set(TABLE.map(([, c]) => c)).size).toBe(12);
  });

  it('allows only public addresses by default', () => {
    const rules = { allowLan: false, allowHost: false, hostAddresses: HOST_ADDRESSES };
    const allowed = TABLE.filter(([text]) => checkAddress(text, rules).allowed).map(([, c]) => c);
    expect(new Set(allowed)).toEqual(new Set(['public']));
  });

  it('allowLan opens private, CGNAT and ULA; allowHost opens the host; nothing opens the rest', () => {
    const rules = { allowLan: true, allowHost: true, hostAddresses: HOST_ADDRESSES };
    const denied = TABLE.filter(([text]) => !checkAddress(text, rules).allowed).map(([, c]) => c);
    expect(new Set(denied)).toEqual(
      new Set(['loopback', 'unspecified', 'metadata', 'link_local', 'multicast', 'broadcast', 'reserved']),
    );
  });

  it('refuses what it cannot parse', () => {
    for (const text of [
      '',
      'localhost',
      '1.2.3',
      '1.2.3.4.5',
      '01.2.3.4',
      '::g',
      '1:2:3:4:5:6:7:8:9',
      '[::1]',
    ]) {
      expect(checkAddress(text, { allowLan: true, allowHost: true, hostAddresses: new Set() }).allowed).toBe(
        false,
      );
    }
  });

  it('collects host addresses from os.networkInterfaces() output, normalized', () => {
    const keys = hostAddressKeys({
      lo: [{ address: '127.0.0.1' }, { address: '::1' }],
      eth0: [{ address: '192.168.1.20' }, { address: 'fe80::1%eth0' }, { address: '2A01:04F8:0000::20' }],
      weird: undefined,
    });
    expect([...keys].sort()).toEqual(['127.0.0.1', '192.168.1.20', '2a01:4f8::20', '::1', 'fe80::1'].sort());
    expect(parseIp('2a01:4f8::20')).toBeDefined();
  });
});
