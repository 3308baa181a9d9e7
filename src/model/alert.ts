/**
 * The T1612 alert: the body POSTed to webhooks and printed by `replay`/`demo`. Its shape is
 * part of the external contract (ARCHITECTURE.md "Alert body"); change it only on purpose.
 */

export type Severity = 'critical' | 'high' | 'medium';

/** How an egress event was tied to a build session. */
export type Attribution = 'lineage' | 'image' | 'window';

export const TECHNIQUE = {
  id: 'T1612',
  name: 'Build Image on Host',
  tactic: 'Defense Evasion',
  url: 'https://attack.mitre.org/techniques/T1612/',
} as const;

export interface AlertTrigger {
  rule: string;
  proc_name: string | null;
  cmdline: string | null;
  user: string | null;
  container_id: string | null;
  /** `ip:port` of the remote Docker API client when the build came over the network. */
  remote_peer: string | null;
}

export interface AlertEvidence {
  time: string;
  rule: string;
  output: string;
}

export interface Alert {
  /** UUID; also the `X-T1612D-Delivery` header. */
  id: string;
  /** ISO-8601 time the alert was raised. */
  time: string;
  severity: Severity;
  technique: typeof TECHNIQUE;
  environment: string;
  hostname: string;
  /** One human sentence. */
  summary: string;
  build: {
    session_id: string;
    started_at: string;
    trigger: AlertTrigger;
    images: string[];
  };
  destination: {
    ip: string;
    port: number | null;
    l4proto: string | null;
    domain: string | null;
    first_seen_at: string;
  };
  connection: {
    time: string;
    rule: string;
    proc_name: string | null;
    cmdline: string | null;
    pid: number | null;
    container_id: string | null;
    attribution: Attribution;
  };
  evidence: AlertEvidence[];
}

/** Somewhere alerts go once decided (the outbox in the daemon, stdout in `replay`). */
export interface AlertSink {
  /** Accept an alert durably; resolves once it is safely stored (not necessarily delivered). */
  enqueue(alert: Alert): Promise<void>;
}
