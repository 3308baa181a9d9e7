/**
 * The sinks the configuration asks for: the webhook (`webhook_url`) and Falcosidekick
 * (`sidekick_url`). With neither, alerts go to stdout as JSON lines, so a daemon started
 * without a webhook still shows what it caught (`docker logs`).
 */
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Sink } from './sink.js';
import { SidekickSink } from './sidekick.js';
import { StdoutSink } from './stdout.js';
import { WebhookSink } from './webhook.js';

/** No webhook and no Falcosidekick: alerts go to stdout, so the logs must go to stderr. */
export function alertsOnStdout(cfg: Config): boolean {
  return !cfg.webhookUrl && !cfg.sidekickUrl;
}

export function createSinks(cfg: Config, deps: { logger: Logger }): Sink[] {
  const sinks: Sink[] = [];
  const webhook = WebhookSink.fromConfig(cfg, deps.logger);
  if (webhook) sinks.push(webhook);
  const sidekick = SidekickSink.fromConfig(cfg, deps.logger);
  if (sidekick) sinks.push(sidekick);
  if (sinks.length === 0) {
    deps.logger.warn('no webhook_url or sidekick_url configured: alerts are printed on stdout as JSON lines');
    sinks.push(new StdoutSink(process.stdout));
  }
  return sinks;
}
