/**
 * Offline compile of Falco conditions with sysdig: `sysdig -r /nonexistent.scap '<filter>'`
 * compiles the filter before opening the capture, so "can't open file" means the filter
 * compiled and "filter error at position N: ..." means it did not. No kernel driver, no shell
 * (execFile), bounded concurrency.
 */
import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';

/** A path no capture will ever be at, so sysdig stops right after compiling the filter. */
const MISSING_CAPTURE = '/nonexistent/t1612d-rules-check.scap';
const COMPILE_TIMEOUT_MS = 20_000;

export type CompileResult = { ok: true } | { ok: false; message: string };

/** Find an executable on PATH (or check an explicit path); undefined when absent. */
export async function findExecutable(name: string, pathEnv = process.env['PATH'] ?? ''): Promise<string | undefined> {
  const candidates = isAbsolute(name) || name.includes('/') ? [name] : pathEnv.split(delimiter).filter(Boolean).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** Compile one filter; a spawn failure or an unexpected answer is reported as a failure. */
export function compileFilter(sysdig: string, filter: string): Promise<CompileResult> {
  return new Promise((resolve) => {
    execFile(
      sysdig,
      ['-r', MISSING_CAPTURE, filter],
      { timeout: COMPILE_TIMEOUT_MS, maxBuffer: 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        const text = `${stdout}\n${stderr}`;
        const filterError = /filter error[^\n]*/i.exec(text);
        if (filterError) {
          resolve({ ok: false, message: describeFilterError(filterError[0], filter) });
        } else if (/can't open file/i.test(text)) {
          resolve({ ok: true });
        } else {
          const detail = text.trim().split('\n')[0] || (err ? err.message : 'no output');
          resolve({ ok: false, message: `sysdig gave no verdict: ${detail}` });
        }
      },
    );
  });
}

/** Add the text around sysdig's reported position, since positions refer to expanded text. */
function describeFilterError(line: string, filter: string): string {
  const m = /position (\d+)/.exec(line);
  const msg = line.replace(/^filter error at position \d+:\s*/i, '').replace(/^filter error:\s*/i, '');
  if (!m) return msg;
  const pos = Number(m[1]);
  const from = Math.max(0, pos - 30);
  const near = filter.slice(from, pos + 30).replace(/\s+/g, ' ').trim();
  return `${msg} (near "${from > 0 ? '…' : ''}${near}")`;
}

/** Run tasks with at most `limit` in flight, preserving result order. */
export async function mapLimit<T, R>(inputs: readonly T[], limit: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(inputs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < inputs.length) {
      const i = next++;
      results[i] = await fn(inputs[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, inputs.length) }, worker));
  return results;
}
