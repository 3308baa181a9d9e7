/**
 * Parsing and validation of single setting values (durations, sizes, lists, networks,
 * addresses, headers, ...), and the words used to say what was expected. config.ts owns the
 * settings table and the layering; this module owns what one value may look like.
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import { isIP } from 'node:net';

/** How a setting's raw value (YAML value or environment string) is parsed. */
export type Kind =
  | 'string'
  | 'optString'
  | 'url'
  | 'optUrl'
  | 'file'
  | 'duration'
  | 'int'
  | 'bytes'
  | 'bool'
  | 'list'
  | 'cidrs'
  | 'headers'
  | 'grpcAddress'
  | 'listenAddress'
  | 'method'
  | 'logLevel'
  | 'name';

/** What parsing a value needs to know about its setting. */
export interface Setting {
  key: string;
  kind: Kind;
  def: unknown;
  min?: number;
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** `15m` -> 900000. Bare numbers are milliseconds; `0` is allowed. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  if (!m) return undefined;
  const n = Number(m[1]) * (DURATION_UNITS[m[2] ?? 'ms'] ?? 1);
  return Number.isFinite(n) ? Math.round(n) : undefined;
}

const BYTE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

function parseBytes(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const m = /^\s*(\d+)\s*(b|kb|mb|gb)?\s*$/i.exec(value);
  if (!m) return undefined;
  return Number(m[1]) * (BYTE_UNITS[(m[2] ?? 'b').toLowerCase()] ?? 1);
}

function parseList(value: unknown): string[] | undefined {
  if (Array.isArray(value)) {
    if (!value.every((v) => typeof v === 'string' || typeof v === 'number')) return undefined;
    return value.map((v) => String(v).trim()).filter((v) => v !== '');
  }
  if (typeof value !== 'string') return undefined;
  return value
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** `10.0.0.0/8` or a bare address (meaning /32 or /128). Returns canonical `addr/prefix`. */
export function parseCidr(text: string): string | undefined {
  const [addr, bits, extra] = text.split('/');
  if (addr === undefined || extra !== undefined) return undefined;
  const family = isIP(addr);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  if (bits === undefined) return `${addr}/${max}`;
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return undefined;
  return `${addr}/${Number(bits)}`;
}

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export function expected(kind: Kind, min?: number): string {
  switch (kind) {
    case 'duration':
      return `a duration like 500ms, 30s, 15m, 2h or 7d${min ? ` (at least ${min}ms)` : ''}`;
    case 'int':
      return `a whole number${min !== undefined ? ` >= ${min}` : ''}`;
    case 'bytes':
      return 'a size like 1048576, 512kb or 10mb';
    case 'bool':
      return 'true or false';
    case 'url':
    case 'optUrl':
      return 'a URL like http://host:port/path';
    case 'file':
      return 'the path of a readable file';
    case 'list':
      return 'a comma-separated list (or a YAML list)';
    case 'cidrs':
      return 'a comma-separated list of networks like 10.0.0.0/8,2001:db8::/32';
    case 'headers':
      return 'Name:value,Name:value (or a YAML map)';
    case 'grpcAddress':
      return 'unix:///path/to/falco.sock, host:port, or empty to disable';
    case 'listenAddress':
      return 'host:port (e.g. 0.0.0.0:2802), or empty to disable';
    case 'method':
      return 'sub or get';
    case 'logLevel':
      return 'one of fatal, error, warn, info, debug, trace, silent';
    case 'name':
      return 'letters, digits, and . _ - (no spaces or braces)';
    default:
      return 'a string';
  }
}

function parseHostPort(v: string): boolean {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$/.exec(v);
  return m !== null && Number(m[2]) <= 65535;
}

/** Parse one raw value; `undefined` means invalid. */
export function parseValue(s: Setting, raw: unknown): unknown {
  const str = raw === undefined ? null : typeof raw === 'string' ? raw.trim() : raw;
  switch (s.kind) {
    case 'string':
      return typeof str === 'string' && str !== '' ? str : typeof str === 'number' ? String(str) : undefined;
    case 'optString':
      return typeof str === 'string' || typeof str === 'number' ? String(str) || null : str === null ? null : undefined;
    case 'name':
      return typeof str === 'string' && /^[A-Za-z0-9_.-]{1,128}$/.test(str) ? str : undefined;
    case 'url':
    case 'optUrl': {
      if (str === null || str === '') return s.kind === 'optUrl' ? null : undefined;
      if (typeof str !== 'string') return undefined;
      try {
        const u = new URL(str);
        return /^(https?|rediss?):$/.test(u.protocol) ? str : undefined;
      } catch {
        return undefined;
      }
    }
    case 'file': {
      if (str === null || str === '') return null;
      if (typeof str !== 'string') return undefined;
      try {
        accessSync(str, fsConstants.R_OK);
        return str;
      } catch {
        return undefined;
      }
    }
    case 'duration': {
      const ms = parseDuration(str);
      return ms !== undefined && ms >= (s.min ?? 0) ? ms : undefined;
    }
    case 'int': {
      const n = typeof str === 'string' && /^\d+$/.test(str) ? Number(str) : str;
      return typeof n === 'number' && Number.isSafeInteger(n) && n >= (s.min ?? 0) ? n : undefined;
    }
    case 'bytes': {
      const n = parseBytes(str);
      return n !== undefined && n >= (s.min ?? 0) ? n : undefined;
    }
    case 'bool': {
      if (typeof str === 'boolean') return str;
      if (typeof str !== 'string') return undefined;
      const l = str.toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(l)) return true;
      if (['false', '0', 'no', 'off', ''].includes(l)) return false;
      return undefined;
    }
    case 'list':
      return str === null ? [] : parseList(str);
    case 'cidrs': {
      const items = str === null ? [] : parseList(str);
      if (!items) return undefined;
      const out: string[] = [];
      for (const it of items) {
        const c = parseCidr(it);
        if (!c) return undefined;
        out.push(c);
      }
      return out;
    }
    case 'headers': {
      if (str === null || str === '') return {};
      if (typeof str === 'object' && !Array.isArray(str)) {
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries(str as Record<string, unknown>)) {
          if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(k) || (typeof v !== 'string' && typeof v !== 'number')) return undefined;
          out[k] = String(v);
        }
        return out;
      }
      if (typeof str !== 'string') return undefined;
      const out: Record<string, string> = {};
      for (const pair of str.split(',')) {
        if (pair.trim() === '') continue;
        const i = pair.indexOf(':');
        const name = pair.slice(0, i).trim();
        if (i <= 0 || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) return undefined;
        out[name] = pair.slice(i + 1).trim();
      }
      return out;
    }
    case 'grpcAddress': {
      if (str === null || str === '') return '';
      if (typeof str !== 'string') return undefined;
      // gRPC's own spellings: unix:///abs/path and unix:/abs/path (also unix:relative).
      if (str.startsWith('unix:')) return /^unix:(\/\/)?.+/.test(str) && str !== 'unix://' ? str : undefined;
      return parseHostPort(str) ? str : undefined;
    }
    case 'listenAddress': {
      if (str === null || str === '') return '';
      return typeof str === 'string' && parseHostPort(str) ? str : undefined;
    }
    case 'method':
      return str === 'sub' || str === 'get' ? str : undefined;
    case 'logLevel':
      return typeof str === 'string' && LOG_LEVELS.has(str) ? str : undefined;
  }
}
