// Address handling on the egress path: one canonical text per IP (the first-seen set's key),
// the ranges that never alert, and the allow-lists (CIDRs, domain suffixes).
import assert from 'node:assert/strict';
import {
  CidrSet,
  DomainSuffixSet,
  formatEndpoint,
  ipv4ToInt,
  isIgnoredAddress,
  normaliseIp,
  parseIpv6,
} from '../src/detect/net.js';

describe('net: dotted quads', () => {
  it('reads a dotted quad as its 32-bit value', () => {
    assert.equal(ipv4ToInt('1.2.3.4'), 0x01020304);
    assert.equal(ipv4ToInt('203.0.113.9'), 0xcb007109);
    assert.equal(ipv4ToInt('0.0.0.0'), 0);
    assert.equal(ipv4ToInt('255.255.255.255'), 0xffffffff);
    assert.equal(ipv4ToInt('9.99.199.250'), 0x0963c7fa);
    assert.equal(ipv4ToInt('10.100.0.1'), 0x0a640001);
  });

  it('refuses text that is not one canonical dotted quad', () => {
    for (const bad of [
      '',
      '1.2.3',
      '1.2.3.',
      '.1.2.3',
      '1..2.3',
      '1.2.3.4.',
      '1.2.3.4.5',
      '01.2.3.4',
      '1.2.3.00',
      '1.2.3.256',
      '1.2.3.1000',
      '1.2.3/4',
      '1.2.3.:',
      '1.2.3.4 ',
      'a.b.c.d',
    ]) {
      assert.equal(ipv4ToInt(bad), -1, bad);
    }
  });
});

describe('net: IPv6 parsing', () => {
  it('expands :: to the missing zero hextets, wherever it stands', () => {
    assert.deepEqual(parseIpv6('::'), [0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(parseIpv6('::1'), [0, 0, 0, 0, 0, 0, 0, 1]);
    assert.deepEqual(parseIpv6('1::'), [1, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(parseIpv6('1::2'), [1, 0, 0, 0, 0, 0, 0, 2]);
    assert.deepEqual(parseIpv6('1:2:3:4:5:6::7'), [1, 2, 3, 4, 5, 6, 0, 7]);
    assert.deepEqual(parseIpv6('1:2:3:4:5:6:7:8'), [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('reads hextets of one to four hex digits in either case', () => {
    assert.deepEqual(parseIpv6('abcd:EF01:a:Bc:0:ffff:1234:f'), [0xabcd, 0xef01, 0xa, 0xbc, 0, 0xffff, 0x1234, 0xf]);
  });

  it('reads an embedded IPv4 tail as the last two hextets', () => {
    assert.deepEqual(parseIpv6('::1.2.3.4'), [0, 0, 0, 0, 0, 0, 0x0102, 0x0304]);
    assert.deepEqual(parseIpv6('::ffff:0.0.0.0'), [0, 0, 0, 0, 0, 0xffff, 0, 0]);
    assert.deepEqual(parseIpv6('a::1.2.3.4'), [0xa, 0, 0, 0, 0, 0, 0x0102, 0x0304]);
    assert.deepEqual(parseIpv6('a:b:c:d:e:f:1.2.3.4'), [0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x0102, 0x0304]);
    // The longest text an address can have (45 characters).
    assert.deepEqual(parseIpv6('0000:0000:0000:0000:0000:ffff:255.255.255.255'), [0, 0, 0, 0, 0, 0xffff, 0xffff, 0xffff]);
  });

  it('refuses malformed addresses', () => {
    for (const bad of [
      '',
      ':',
      'abcd',
      '1.2.3.4',
      '1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7::8',
      '1:2:3:4:5:6:7:8::',
      '1::2::3',
      '1:2:3:4:5:6:7:8::1::2',
      '12345::1',
      'g::1',
      '1::g',
      '1::x1',
      ':::',
      '::1.2.3',
      '::01.2.3.4',
      '1:2:3:4:5:6:7:1.2.3.4',
      '00000:0000:0000:0000:0000:ffff:255.255.255.255',
    ]) {
      assert.equal(parseIpv6(bad), null, bad);
    }
  });
});

describe('net: canonical text', () => {
  it('keeps a dotted quad as it is and trims surrounding space', () => {
    assert.equal(normaliseIp('0.0.0.0'), '0.0.0.0');
    assert.equal(normaliseIp(' 203.0.113.9\n'), '203.0.113.9');
    assert.equal(normaliseIp(' 0.0.0.0'), '0.0.0.0');
    assert.equal(normaliseIp('\t2001:DB8::1 '), '2001:db8::1');
    assert.equal(normaliseIp(undefined), null);
    assert.equal(normaliseIp(null), null);
  });

  it('turns IPv4-mapped IPv6 into the IPv4 address, and nothing else', () => {
    assert.equal(normaliseIp('::ffff:1.2.3.4'), '1.2.3.4');
    assert.equal(normaliseIp('::ffff:0.0.0.0'), '0.0.0.0');
    assert.equal(normaliseIp('[::ffff:c0a8:1fe]'), '192.168.1.254');
    assert.equal(normaliseIp('0:0:0:0:0:ffff:ff00:ff'), '255.0.0.255');
    // One non-zero hextet before the ffff, or no ffff: an IPv6 address of its own.
    assert.equal(normaliseIp('1:0:0:0:0:ffff:102:304'), '1::ffff:102:304');
    assert.equal(normaliseIp('0:1:0:0:0:ffff:102:304'), '0:1::ffff:102:304');
    assert.equal(normaliseIp('0:0:1:0:0:ffff:102:304'), '::1:0:0:ffff:102:304');
    assert.equal(normaliseIp('0:0:0:1:0:ffff:102:304'), '::1:0:ffff:102:304');
    assert.equal(normaliseIp('0:0:0:0:1:ffff:102:304'), '::1:ffff:102:304');
    assert.equal(normaliseIp('::1.2.3.4'), '::102:304');
    assert.equal(normaliseIp('::fffe:1.2.3.4'), '::fffe:102:304');
  });

  it('compresses the first longest run of two or more zero hextets', () => {
    assert.equal(normaliseIp('::'), '::');
    assert.equal(normaliseIp('0:0:0:0:0:0:0:1'), '::1');
    assert.equal(normaliseIp('1:0:0:0:0:0:0:0'), '1::');
    assert.equal(normaliseIp('1:2:3:4:5:6:7:8'), '1:2:3:4:5:6:7:8');
    assert.equal(normaliseIp('1:0:2:3:4:5:6:7'), '1:0:2:3:4:5:6:7');
    assert.equal(normaliseIp('0:1:2:3:4:5:6:7'), '0:1:2:3:4:5:6:7');
    assert.equal(normaliseIp('1:0:0:2:0:0:3:4'), '1::2:0:0:3:4');
    assert.equal(normaliseIp('1:0:0:2:0:0:0:4'), '1:0:0:2::4');
    assert.equal(normaliseIp('1:0:0:0:2:0:0:0'), '1::2:0:0:0');
    assert.equal(normaliseIp('2001:0DB8:00:000:0:0:0:ABCD'), '2001:db8::abcd');
  });

  it('drops brackets only when both are there, and a zone id', () => {
    assert.equal(normaliseIp('[2001:db8::1]'), '2001:db8::1');
    assert.equal(normaliseIp('[2001:db8::1'), null);
    assert.equal(normaliseIp('2001:db8::1]'), null);
    assert.equal(normaliseIp('[203.0.113.9]'), '203.0.113.9');
    assert.equal(normaliseIp('fe80::1%eth0'), 'fe80::1');
    assert.equal(normaliseIp('[fe80::2%25en0]'), 'fe80::2');
    assert.equal(normaliseIp('%eth0'), null);
    assert.equal(normaliseIp('2001:db8::12'), '2001:db8::12');
  });
});

describe('net: addresses never worth an alert', () => {
  it('ignores IPv4 "this network", loopback, link-local, multicast, reserved and broadcast', () => {
    for (const ip of ['0.0.0.0', '0.1.2.3', '127.0.0.1', '127.255.0.9', '169.254.0.1', '169.254.255.255', '224.0.0.1', '239.1.2.3', '240.0.0.1', '255.255.255.255']) {
      assert.equal(isIgnoredAddress(ip), true, ip);
    }
  });

  it('reports the IPv4 neighbours of those ranges', () => {
    for (const ip of ['1.0.0.1', '126.255.255.255', '128.0.0.1', '169.253.1.1', '169.255.1.1', '168.254.1.1', '170.254.1.1', '223.255.255.255', '10.0.0.1']) {
      assert.equal(isIgnoredAddress(ip), false, ip);
    }
  });

  it('ignores IPv6 unspecified, loopback, link-local fe80::/10 and multicast ff00::/8', () => {
    for (const ip of ['::', '::1', 'fe80::1', 'febf:ffff::1', 'ff02::1', 'ff00::', 'not an address']) {
      assert.equal(isIgnoredAddress(ip), true, ip);
    }
    for (const ip of ['::2', 'fec0::1', 'fe7f::1', 'fe00::1', 'fd00::1', 'f0ff::1', '2001:db8::1', '1::']) {
      assert.equal(isIgnoredAddress(ip), false, ip);
    }
  });
});

describe('net: endpoints', () => {
  it('brackets IPv6 and appends the port when there is one', () => {
    assert.equal(formatEndpoint('203.0.113.9', 443), '203.0.113.9:443');
    assert.equal(formatEndpoint('203.0.113.9', null), '203.0.113.9');
    assert.equal(formatEndpoint('2001:db8::1', 80), '[2001:db8::1]:80');
    assert.equal(formatEndpoint('2001:db8::1', null), '[2001:db8::1]');
    assert.equal(formatEndpoint('203.0.113.9', 0), '203.0.113.9:0');
  });
});

describe('net: CIDR allow-list', () => {
  it('matches IPv4 networks by prefix length', () => {
    const c = new CidrSet(['10.0.0.0/8', '192.0.2.32/27']);
    assert.equal(c.empty, false);
    assert.equal(c.contains('10.255.1.2'), true);
    assert.equal(c.contains('11.0.0.0'), false);
    assert.equal(c.contains('9.255.255.255'), false);
    assert.equal(c.contains('192.0.2.32'), true);
    assert.equal(c.contains('192.0.2.63'), true);
    assert.equal(c.contains('192.0.2.64'), false);
    assert.equal(c.contains('192.0.2.31'), false);
    // A v6 or unreadable address is not in a v4-only set.
    assert.equal(c.contains('2001:db8::1'), false);
    assert.equal(c.contains('not an address'), false);
  });

  it('reads a host bit set in the network address as the network', () => {
    const c = new CidrSet(['198.51.100.77/24']);
    assert.equal(c.contains('198.51.100.1'), true);
    assert.equal(c.contains('198.51.101.1'), false);
  });

  it('treats a bare address as a single host and /0 as everything', () => {
    const host = new CidrSet(['198.51.100.7']);
    assert.equal(host.contains('198.51.100.7'), true);
    assert.equal(host.contains('198.51.100.6'), false);
    const all = new CidrSet(['0.0.0.0/0']);
    assert.equal(all.empty, false);
    assert.equal(all.contains('203.0.113.9'), true);
    assert.equal(all.contains('0.0.0.0'), true);
    assert.equal(new CidrSet(['0.0.0.0/8']).contains('0.0.0.0'), true);
  });

  it('caps a prefix longer than the address at a single host', () => {
    const v4 = new CidrSet(['198.51.100.7/40']);
    assert.equal(v4.contains('198.51.100.7'), true);
    assert.equal(v4.contains('198.51.100.8'), false);
    assert.equal(v4.contains('198.0.0.1'), false);
    const v6 = new CidrSet(['2001:db8::7/200']);
    assert.equal(v6.contains('2001:db8::7'), true);
    assert.equal(v6.contains('2001:db8::8'), false);
  });

  it('matches IPv6 networks, also on prefixes inside a hextet', () => {
    const c = new CidrSet(['2001:db8:1::/48', '2001:e00::/24', 'fd12:3456:789a:1::/60']);
    assert.equal(c.empty, false);
    assert.equal(c.contains('2001:db8:1:ffff::1'), true);
    assert.equal(c.contains('2001:db8:2::1'), false);
    assert.equal(c.contains('2001:eff:ffff::1'), true);
    assert.equal(c.contains('2001:f00::1'), false);
    assert.equal(c.contains('2001:dff::1'), false);
    assert.equal(c.contains('2002:e00::1'), false);
    assert.equal(c.contains('fd12:3456:789a:f::1'), true);
    assert.equal(c.contains('fd12:3456:789a:10::1'), false);
    assert.equal(c.contains('203.0.113.9'), false);
    assert.equal(c.contains('not an address'), false);
  });

  it('treats a bare IPv6 address as a single host and ::/0 as every IPv6 address', () => {
    const host = new CidrSet(['[2001:DB8::0:1]']);
    assert.equal(host.contains('2001:db8::1'), true);
    assert.equal(host.contains('2001:db8::2'), false);
    assert.equal(host.contains('2001:db8:0:0:1::1'), false);
    const all = new CidrSet(['::/0']);
    assert.equal(all.contains('2001:db8::1'), true);
    assert.equal(all.contains('203.0.113.9'), false);
  });

  it('matches an IPv4-mapped network as the IPv4 network it maps', () => {
    const c = new CidrSet(['::ffff:192.0.2.0/120', '[::ffff:198.51.100.7]']);
    assert.equal(c.contains('192.0.2.0'), true);
    assert.equal(c.contains('192.0.2.255'), true);
    assert.equal(c.contains('192.0.3.0'), false);
    assert.equal(c.contains('198.51.100.7'), true);
    assert.equal(c.contains('198.51.100.8'), false);
    // ::ffff:0:0/96 holds every mapped address, and so does any shorter prefix over it.
    for (const all of ['::ffff:0.0.0.0/96', '::ffff:0:0/80']) {
      assert.equal(new CidrSet([all]).contains('203.0.113.9'), true, all);
    }
    // An IPv4 network keeps its own prefix.
    assert.equal(new CidrSet(['192.0.2.0/120']).contains('192.0.2.1'), false);
  });

  it('skips entries that are not addresses, and is empty with none left', () => {
    const none = new CidrSet(['garbage', '', '/8', '300.1.1.1/8']);
    assert.equal(none.empty, true);
    assert.equal(none.contains('203.0.113.9'), false);
    assert.equal(none.contains('2001:db8::1'), false);
    assert.equal(new CidrSet([]).empty, true);
    const v6only = new CidrSet(['garbage', '2001:db8::/32']);
    assert.equal(v6only.empty, false);
    assert.equal(v6only.contains('2001:db8:ffff::1'), true);
  });
});

describe('net: domain allow-list', () => {
  it('matches the domain itself and its subdomains, not look-alikes', () => {
    const d = new DomainSuffixSet(['example.com']);
    assert.equal(d.empty, false);
    assert.equal(d.matches('example.com'), true);
    assert.equal(d.matches('a.b.example.com'), true);
    assert.equal(d.matches('badexample.com'), false);
    assert.equal(d.matches('example.com.evil.net'), false);
    assert.equal(d.matches('com'), false);
  });

  it('reads entries case-blind, with a leading "." or "*." and a trailing root dot', () => {
    const d = new DomainSuffixSet([' Example.COM ', '*.cdn.example.org', '.mirror.example.net', 'pkg.example.io.']);
    for (const name of ['example.com', 'www.example.com', 'cdn.example.org', 'x.cdn.example.org', 'mirror.example.net', 'a.mirror.example.net', 'pkg.example.io', 'b.pkg.example.io']) {
      assert.equal(d.matches(name), true, name);
    }
    for (const name of ['example.org', 'xcdn.example.org', 'example.net', 'example.io', 'pkg.example.i', 'pkgexample.io']) {
      assert.equal(d.matches(name), false, name);
    }
  });

  it('reads names case-blind and with a trailing root dot', () => {
    const d = new DomainSuffixSet(['registry.example.com']);
    assert.equal(d.matches('REGISTRY.Example.com.'), true);
    assert.equal(d.matches('Eu.Registry.EXAMPLE.com.'), true);
    assert.equal(d.matches('registry.example.co'), false);
    assert.equal(d.matches(null), false);
    assert.equal(d.matches(''), false);
  });

  it('is empty when no entry names a domain', () => {
    const d = new DomainSuffixSet(['', ' ', '.', '*.', '*']);
    // '*' alone is a name, not a wildcard: it matches only itself.
    assert.equal(d.empty, false);
    assert.equal(d.matches('a..'), false);
    assert.equal(d.matches('example.com'), false);
    const none = new DomainSuffixSet(['', ' ', '.', '*.']);
    assert.equal(none.empty, true);
    assert.equal(none.matches('a..'), false);
    assert.equal(none.matches('example.com'), false);
    assert.equal(new DomainSuffixSet([]).empty, true);
  });
});
