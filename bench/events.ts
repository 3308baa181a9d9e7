/**
 * Event material for the bench: template Falco alerts taken from the demo script, and the
 * variations the bench needs (another host, another destination IP, another time).
 */
import { demoScript, renderScript } from '../src/demo/script.js';
import { formatTimeNs } from '../src/model/event.js';

export type Json = Record<string, unknown>;
export interface Templates {
  trigger: Json;
  step: Json;
  egress: Json;
}

/** Template events from the demo script: [build trigger, build step, egress from the step]. */
export async function templates(): Promise<Templates> {
  const script = demoScript();
  const rendered = await renderScript(BigInt(Date.now()) * 1_000_000n, script);
  const pick = (rule: string, host: string): Json => {
    const i = script.findIndex((e) => e.rule === rule && e.hostname === host);
    const ev = rendered[i];
    if (!ev) throw new Error(`no ${rule} in the demo script`);
    return ev;
  };
  return {
    trigger: pick('T1612 Image Build Command Executed', 'ci-build-01'),
    step: pick('T1612 Builder Runtime Started', 'ci-build-01'),
    egress: pick('T1612 Build Step Outbound Connection', 'ci-build-01'),
  };
}

/** Container egress outside any build (no build ancestry): decided, learned, never alerted. */
export const OUTSIDE_BUILD: Json = { 'thread.cgroups': null, 'proc.apid[2]': null, 'proc.aname[2]': 'containerd-shim' };

/** A copy of a template on another host, with some output_fields changed, at `timeNs`. */
export function variant(tpl: Json, host: string, fields: Json, timeNs: bigint): Json {
  const of = { ...(tpl['output_fields'] as Json), ...fields };
  return { ...tpl, hostname: host, output_fields: of, time: formatTimeNs(timeNs) };
}

/** The i-th distinct public-looking IPv4 address in a /8-sized family starting at `base`. */
export function ipOf(i: number, base = 20): string {
  return `${base + ((i >> 16) & 0x3f)}.${(i >> 8) & 0xff}.${i & 0xff}.${7 + (i % 200)}`;
}

/** Wall clock in ns with sub-millisecond resolution, comparable across processes. */
export function wallNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}
