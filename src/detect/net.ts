/**
 * IP address handling for the detection path: one canonical text form per address (so the
 * first-seen set never holds `::ffff:1.2.3.4` and `1.2.3.4` as two IPs), CIDR allow-lists,
 * domain-suffix allow-lists, and the special ranges that are never worth reporting.
 *
 * Everything here runs on the egress hot path, so the IPv4 cases avoid allocation: a plain
 * dotted quad is returned as the same string and matched as a 32-bit integer.
 */

/** Parse a canonical dotted quad to an unsigned 32-bit integer; -1 when it is not one. */
export function ipv4ToInt(text: string): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      // A leading zero ("01") is ambiguous (octal in some parsers): not canonical.
      if (digits === 1 && octet === 0) return -1;
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return -1;
    } else if (c === 46 /* . */) {
      if (digits === 0 || ++dots > 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + octet;
}

function intToIpv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Parse an IPv6 address (optionally with an embedded IPv4 tail) into 8 hextets. */
export function parseIpv6(text: string): number[] | null {
  if (text.length < 2 || text.length > 45 || !text.includes(':')) return null;
  let head = text;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    const v4 = ipv4ToInt(text.slice(lastColon + 1));
    if (v4 < 0) return null;
    tail = [(v4 >>> 16) & 0xffff, v4 & 0xffff];
    head = text.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::", "a::1.2.3.4" leaves "a::"; "a:b:1.2.3.4" leaves "a:b:".
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const parts = head.split('::');
  if (parts.length > 2) return null;
  const parse = (s: string): number[] | null => {
    if (s === '') return [];
    const out: number[] = [];
    for (const h of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(h)) return null;
      out.push(parseInt(h, 16));
    }
    return out;
  };
  const left = parse(parts[0] ?? '');
  const right = parts.length === 2 ? parse(parts[1] ?? '') : [];
  if (!left || !right) return null;
  const total = left.length + right.length + tail.length;
  if (parts.length === 2) {
    if (total > 7) return null;
    return [...left, ...new Array<number>(8 - total).fill(0), ...right, ...tail];
  }
  return total === 8 ? [...left, ...tail] : null;
}

/** RFC 5952 text: lower case, longest run (>= 2) of zero hextets compressed. */
function formatIpv6(h: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (h[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && h[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number, b: number): string => h.slice(a, b).map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

/**
 * Canonical text of an IP address, or null when the text is not one. IPv4-mapped IPv6
 * (`::ffff:1.2.3.4`, also written `::ffff:102:304`) becomes the IPv4 address; brackets and
 * zone ids (`fe80::1%eth0`) are removed.
 */
export function normaliseIp(text: string | null | undefined): string | null {
  if (!text) return null;
  if (ipv4ToInt(text) >= 0) return text;
  let s = text.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (ipv4ToInt(s) >= 0) return s;
  const h = parseIpv6(s);
  if (!h) return null;
  if (h[0] === 0 && h[1] === 0 && h[2] === 0 && h[3] === 0 && h[4] === 0 && h[5] === 0xffff) {
    return intToIpv4((((h[6] ?? 0) << 16) | (h[7] ?? 0)) >>> 0);
  }
  return formatIpv6(h);
}

/**
 * Loopback, link-local, multicast, unspecified and broadcast addresses: never a download
 * source worth an alert, and never recorded. Expects canonical text (normaliseIp).
 */
export function isIgnoredAddress(ip: string): boolean {
  const v4 = ipv4ToInt(ip);
  if (v4 >= 0) {
    const a = v4 >>> 24;
    if (a === 0 || a === 127) return true; // "this network", loopback
    if (a >= 224) return true; // multicast 224/4, reserved 240/4, broadcast
    return a === 169 && ((v4 >>> 16) & 255) === 254; // link-local
  }
  if (ip === '::' || ip === '::1') return true;
  const h = parseIpv6(ip);
  if (!h) return true;
  const first = h[0] ?? 0;
  return (first & 0xffc0) === 0xfe80 || (first & 0xff00) === 0xff00;
}

/** Format `ip:port`, bracketing IPv6. */
export function formatEndpoint(ip: string, port: number | null): string {
  const host = ip.includes(':') ? `[${ip}]` : ip;
  return port === null ? host : `${host}:${port}`;
}

interface V6Net {
  words: number[];
  prefix: number;
}

/** A set of networks (`addr/prefix`), matched against canonical addresses. */
export class CidrSet {
  private readonly v4: { net: number; mask: number }[] = [];
  private readonly v6: V6Net[] = [];

  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const [addr = '', bitsText] = c.split('/');
      const ip = normaliseIp(addr);
      if (!ip) continue;
      const v4 = ipv4ToInt(ip);
      if (v4 >= 0) {
        // An IPv4-mapped network (`::ffff:192.0.2.0/120`) counts its prefix over 128 bits.
        const given = bitsText === undefined ? 32 : Number(bitsText) - (addr.includes(':') ? 96 : 0);
        const bits = Math.max(0, Math.min(32, given));
        const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
        this.v4.push({ net: (v4 & mask) >>> 0, mask });
      } else {
        const words = parseIpv6(ip);
        if (words) this.v6.push({ words, prefix: bitsText === undefined ? 128 : Math.min(128, Number(bitsText)) });
      }
    }
  }

  get empty(): boolean {
    return this.v4.length === 0 && this.v6.length === 0;
  }

  contains(ip: string): boolean {
    if (this.empty) return false;
    const v4 = ipv4ToInt(ip);
    if (v4 >= 0) {
      for (const n of this.v4) if (((v4 & n.mask) >>> 0) === n.net) return true;
      return false;
    }
    if (this.v6.length === 0) return false;
    const h = parseIpv6(ip);
    if (!h) return false;
    for (const n of this.v6) if (matchV6(h, n)) return true;
    return false;
  }
}

function matchV6(h: readonly number[], n: V6Net): boolean {
  let bits = n.prefix;
  for (let i = 0; i < 8 && bits > 0; i++, bits -= 16) {
    const take = Math.min(16, bits);
    const mask = (0xffff << (16 - take)) & 0xffff;
    if (((h[i] ?? 0) & mask) !== ((n.words[i] ?? 0) & mask)) return false;
  }
  return true;
}

/** Domain suffixes (`example.com` matches `example.com` and `a.example.com`, not `badexample.com`). */
export class DomainSuffixSet {
  private readonly exact = new Set<string>();
  private readonly suffixes: string[] = [];

  constructor(domains: readonly string[]) {
    for (const d of domains) {
      const s = d.trim().toLowerCase().replace(/^\*?\./, '').replace(/\.$/, '');
      if (s === '') continue;
      this.exact.add(s);
      this.suffixes.push(`.${s}`);
    }
  }

  get empty(): boolean {
    return this.suffixes.length === 0;
  }

  matches(name: string | null): boolean {
    if (!name || this.suffixes.length === 0) return false;
    let n = name.toLowerCase();
    if (n.endsWith('.')) n = n.slice(0, -1);
    if (this.exact.has(n)) return true;
    for (const s of this.suffixes) if (n.endsWith(s)) return true;
    return false;
  }
}
