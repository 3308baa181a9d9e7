/**
 * Falcosidekick forwarding: each alert becomes a Falco-format event (the JSON Falco's
 * http_output sends) so Falcosidekick can fan it out to Slack, Teams, PagerDuty, Elasticsearch
 * and the rest. Falcosidekick rejects (400) a body without a known priority, a rule, a time or
 * a non-empty `output_fields`, so all four are always present.
 *
 * The event's tags never include `t1612_build` / `t1612_egress`: if Falcosidekick's output is
 * pointed back at t1612d's ingest, the forwarded alert classifies as `other` and loops nowhere.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Alert, Severity } from '../model/alert.js';
import type { Priority } from '../model/event.js';
import { posterFor, type EndpointOptions, type HttpPoster } from './http.js';
import { userAgent, type SendResult, type Sink } from './sink.js';
import { tlsFromConfig } from './webhook.js';

export const SIDEKICK_RULE = 'T1612 Build Image on Host';
export const SIDEKICK_SOURCE = 't1612d';
export const SIDEKICK_TAGS = ['T1612', 'mitre_defense_evasion', 't1612d'] as const;

/**
 * Severity -> Falco priority. Falcosidekick outputs filter on `minimumpriority`; mapping medium
 * to Warning keeps every T1612 alert above the common `warning` threshold, while high (Error)
 * and critical (Critical) still page where users route Error and above.
 */
export const PRIORITY_OF: Record<Severity, Priority> = {
  critical: 'Critical',
  high: 'Error',
  medium: 'Warning',
};

/** A Falco JSON alert as Falcosidekick's `POST /` accepts it. */
export interface FalcoJsonEvent {
  time: string;
  rule: string;
  priority: Priority;
  source: string;
  hostname: string;
  output: string;
  output_fields: Record<string, string | number>;
  tags: string[];
}

const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

/** The alert as a Falco event. Total: any alert (even one with odd values) gives a valid event. */
export function toFalcoEvent(alert: Alert, now: () => Date = () => new Date()): FalcoJsonEvent {
  const time = typeof alert.time === 'string' && ISO_RE.test(alert.time) && !Number.isNaN(Date.parse(alert.time)) ? alert.time : now().toISOString();
  const priority = PRIORITY_OF[alert.severity] ?? 'Warning';
  const fields: Record<string, string | number> = {};
  const put = (key: string, value: unknown): void => {
    if (typeof value === 'string' && value !== '') fields[`t1612.${key}`] = value;
    else if (typeof value === 'number' && Number.isFinite(value)) fields[`t1612.${key}`] = value;
  };
  put('alert_id', alert.id);
  put('severity', alert.severity);
  put('technique', alert.technique?.id);
  put('environment', alert.environment);
  put('hostname', alert.hostname);
  put('summary', alert.summary);
  const b = alert.build;
  put('build.session_id', b?.session_id);
  put('build.started_at', b?.started_at);
  put('build.trigger.rule', b?.trigger?.rule);
  put('build.trigger.proc_name', b?.trigger?.proc_name);
  put('build.trigger.cmdline', b?.trigger?.cmdline);
  put('build.trigger.user', b?.trigger?.user);
  put('build.trigger.container_id', b?.trigger?.container_id);
  put('build.trigger.remote_peer', b?.trigger?.remote_peer);
  if (Array.isArray(b?.images) && b.images.length > 0) put('build.images', b.images.join(','));
  const d = alert.destination;
  put('destination.ip', d?.ip);
  put('destination.port', d?.port);
  put('destination.l4proto', d?.l4proto);
  put('destination.domain', d?.domain);
  put('destination.first_seen_at', d?.first_seen_at);
  const c = alert.connection;
  put('connection.time', c?.time);
  put('connection.rule', c?.rule);
  put('connection.proc_name', c?.proc_name);
  put('connection.cmdline', c?.cmdline);
  put('connection.pid', c?.pid);
  put('connection.container_id', c?.container_id);
  put('connection.attribution', c?.attribution);
  put('evidence_count', Array.isArray(alert.evidence) ? alert.evidence.length : 0);
  // Never empty: Falcosidekick answers 400 to an event without output_fields.
  if (fields['t1612.alert_id'] === undefined) fields['t1612.alert_id'] = 'unknown';

  const dest = d?.ip ? `${d.ip}${d.port !== null && d.port !== undefined ? `:${d.port}` : ''}` : 'an unknown destination';
  const text = alert.summary || `Image build reached ${dest}, never contacted before in environment ${alert.environment}`;
  // Falco's own output layout "HH:MM:SS.nnnnnnnnn: Priority text (k=v ...)", which
  // Falcosidekick's output_field_format option knows how to re-template.
  const clock = /T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?/.exec(time);
  const stamp = clock ? `${clock[1]}.${(clock[2] ?? '').padEnd(9, '0')}` : '00:00:00.000000000';
  const detail = [
    `severity=${alert.severity}`,
    `destination=${dest}`,
    `domain=${d?.domain ?? '<NA>'}`,
    `proc=${c?.proc_name ?? '<NA>'}`,
    `attribution=${c?.attribution ?? '<NA>'}`,
    `session=${b?.session_id ?? '<NA>'}`,
    `environment=${alert.environment}`,
    `alert_id=${alert.id}`,
  ].join(' ');
  return {
    time,
    rule: SIDEKICK_RULE,
    priority,
    source: SIDEKICK_SOURCE,
    hostname: alert.hostname || 'unknown',
    output: `${stamp}: ${priority} ${text.replace(/\s+/g, ' ')} (${detail})`,
    output_fields: fields,
    tags: [...SIDEKICK_TAGS],
  };
}

export type SidekickSinkOptions = EndpointOptions;

export class SidekickSink implements Sink {
  readonly name = 'sidekick';
  readonly concurrency: number;
  private readonly http: HttpPoster;

  constructor(options: SidekickSinkOptions) {
    this.concurrency = options.concurrency;
    this.http = posterFor(this.name, options);
  }

  static fromConfig(cfg: Config, logger: Logger): SidekickSink | undefined {
    if (!cfg.sidekickUrl) return undefined;
    return new SidekickSink({
      url: cfg.sidekickUrl,
      timeoutMs: cfg.webhookTimeoutMs,
      concurrency: cfg.webhookConcurrency,
      tls: tlsFromConfig(cfg),
      logger,
    });
  }

  async send(alert: Alert, _body: string, signal?: AbortSignal): Promise<SendResult> {
    const bytes = Buffer.from(JSON.stringify(toFalcoEvent(alert)), 'utf8');
    return this.http.post(
      bytes,
      { 'content-type': 'application/json', 'user-agent': userAgent(), 'x-t1612d-delivery': String(alert.id) },
      signal,
    );
  }

  close(): Promise<void> {
    return this.http.close();
  }
}
