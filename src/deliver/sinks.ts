/**
 * The sinks the configuration asks for: the webhook (`webhook_url`) and Falcosidekick
 * (`sidekick_url`). An empty list is legal: alerts are still written to the outbox (with Redis,
 * the stream is an audit trail) but nothing delivers them, which the outbox logs at start.
 */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Sink } from './sink.js';
import { SidekickSink } from './sidekick.js';
import { WebhookSink } from './webhook.js';

export function createSinks(cfg: Config, deps: { logger: Logger }): Sink[] {
  const sinks: Sink[] = [];
  const webhook = WebhookSink.fromConfig(cfg, deps.logger);
  if (webhook) sinks.push(webhook);
  const sidekick = SidekickSink.fromConfig(cfg, deps.logger);
  if (sidekick) sinks.push(sidekick);
  return sinks;
}
