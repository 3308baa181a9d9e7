/**
 * Builds the Alert body (detect/alert.ts, ARCHITECTURE.md "Alert body") from a decided
 * attribution: the session's build trigger and evidence, the egress event, and the first-seen
 * answer.
 */
import { randomUUID } from 'node:crypto';
import { TECHNIQUE, type Alert, type Attribution, type Severity } from '../model/alert.js';
import type { EgressSignal } from './classify.js';
import { formatEndpoint } from './net.js';
import { evidenceOf } from './sessions.js';
import { formatTimeNs } from '../model/event.js';
import { truncate } from '../ops/logger.js';
import type { SessionRecord } from '../model/session.js';

export interface AlertInput {
  environment: string;
  session: SessionRecord;
  egress: EgressSignal;
  attribution: Attribution;
  severity: Severity;
  /** When the environment first saw the destination, ms. */
  firstSeenAt: number;
  /** Wall clock for the alert's `time`, ms. */
  nowMs: number;
  /** The connection came from a builder itself (pull, push, `ADD <url>`). */
  builder?: boolean;
}

const MAX_CMDLINE = 1000;

function iso(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? new Date(0).toISOString() : d.toISOString();
}

/** One human sentence saying what happened. */
export function summarise(i: AlertInput): string {
  const s = i.session;
  const e = i.egress;
  const dest = `never-seen ${formatEndpoint(e.ip, e.port)}${e.domain ? ` (${e.domain})` : ''}`;
  const via = e.proc.name ? ` via ${e.proc.name}` : '';
  const remote = s.remotePeer ? ` (remote API from ${s.remotePeer})` : '';
  if (i.builder) {
    return `During an image build on ${s.host}${remote}, builder ${e.proc.name ?? 'process'} connected to ${dest} (a base-image pull from a registry that is not allow-listed, or ADD <url>)`;
  }
  switch (i.attribution) {
    case 'lineage':
      return `Image build on ${s.host}${remote} downloaded from ${dest}${via}`;
    case 'image':
      return `Container from freshly built image ${e.image ?? 'unknown'} on ${s.host}${remote} connected to ${dest}${via}`;
    case 'window':
      return `During an image build on ${s.host}${remote}, a process connected to ${dest}${via} (same host and time window only)`;
  }
}

export function buildAlert(i: AlertInput): Alert {
  const s = i.session;
  const e = i.egress;
  const ctr = e.event.fields['container.id'] ?? null;
  return {
    id: randomUUID(),
    time: iso(i.nowMs),
    severity: i.severity,
    technique: TECHNIQUE,
    environment: i.environment,
    hostname: s.host,
    summary: summarise(i),
    build: {
      session_id: s.id,
      started_at: iso(s.startedAt),
      trigger: { ...s.trigger, remote_peer: s.remotePeer },
      images: [...s.images],
    },
    destination: {
      ip: e.ip,
      port: e.port,
      l4proto: e.proto,
      domain: e.domain,
      first_seen_at: iso(i.firstSeenAt),
    },
    connection: {
      time: formatTimeNs(e.event.timeNs),
      rule: e.event.rule,
      proc_name: e.proc.name,
      cmdline: e.proc.cmdline === null ? null : truncate(e.proc.cmdline, MAX_CMDLINE),
      pid: e.proc.pid,
      container_id: ctr,
      attribution: i.attribution,
    },
    evidence: [...s.evidence, evidenceOf(e)],
  };
}
