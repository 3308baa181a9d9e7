/**
 * CLI entry: `t1612d [run] | replay FILE|- | demo | rules check [FILES…] | outbox replay-dead`.
 * Signals are handled here, in one place: the first SIGINT/SIGTERM starts a graceful stop,
 * a second one kills (the handlers are `once`).
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { resolveConfig, describeSettings, type Config } from './config/config.js';
import { ConfigError, describeError } from './model/errors.js';
import { createLogger, type Logger } from './ops/logger.js';
import { Daemon } from './daemon.js';
import { runReplay } from './replay.js';
import { runDemo } from './demo/demo.js';
import { runRulesCheck } from './rules/check.js';
import { replayDeadLetters } from './deliver/outbox.js';
import { alertsOnStdout } from './deliver/sinks.js';
import { Metrics } from './ops/metrics.js';
import { tuneHeap } from './ops/heap.js';
import { migrateKnownIps } from './store/stores.js';

const USAGE = `usage: t1612d [run] [--config FILE]
       t1612d replay FILE|- [--config FILE]
       t1612d demo
       t1612d rules check [FILES...]
       t1612d outbox replay-dead [--config FILE]
       t1612d migrate [--config FILE]
       t1612d --help | --version

Settings come from defaults, then the YAML file (--config or T1612D_CONFIG), then T1612D_*
environment variables; see README.md.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function loadConfig(file: string | undefined, overrides?: Partial<Config>): Config {
  return resolveConfig({ file, overrides });
}

async function cmdRun(configFile: string | undefined): Promise<number> {
  const config = loadConfig(configFile);
  // Alerts printed on stdout must not interleave with log lines: the logs move to stderr.
  const logger = createLogger({
    level: config.logLevel,
    destination: alertsOnStdout(config) ? pino.destination({ fd: 2, sync: false }) : undefined,
  });
  const daemon = new Daemon(config, { logger });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping (send the signal again to kill)');
    daemon.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  // A failure nothing else caught means state we cannot trust: say so, stop cleanly (pending
  // alerts stay in the Redis outbox) and exit non-zero so the supervisor restarts us.
  const fatal = (kind: string) => (err: unknown): void => {
    logger.fatal({ err }, kind);
    process.exitCode = 1;
    if (stopping) return;
    stopping = true;
    void daemon.close().finally(() => process.exit(1));
  };
  process.on('unhandledRejection', fatal('unhandled rejection'));
  process.on('uncaughtException', fatal('uncaught exception'));
  await daemon.start();
  return new Promise<number>(() => {
    // Runs until a signal; stop() exits the process.
  });
}

async function cmdReplay(path: string | undefined, configFile: string | undefined): Promise<number> {
  if (!path) {
    process.stderr.write(`t1612d replay: missing FILE (or - for stdin)\n${USAGE}\n`);
    return 2;
  }
  const config = loadConfig(configFile);
  // Logs go to stderr so stdout carries only alerts.
  const logger = createLogger({ level: config.logLevel === 'info' ? 'warn' : config.logLevel, destination: pino.destination({ fd: 2, sync: true }) });
  const result = await runReplay(path, config, process.stdout, logger);
  process.stderr.write(`t1612d replay: ${result.events} events, ${result.invalid} invalid, ${result.alerts.length} alerts\n`);
  return 0;
}

async function cmdOutbox(sub: string | undefined, configFile: string | undefined): Promise<number> {
  if (sub !== 'replay-dead') {
    process.stderr.write(`t1612d outbox: unknown sub-command ${sub ?? '(none)'}\n${USAGE}\n`);
    return 2;
  }
  const config = loadConfig(configFile);
  const logger: Logger = createLogger({ level: config.logLevel, destination: pino.destination({ fd: 2, sync: true }) });
  const moved = await replayDeadLetters(config, { logger, metrics: new Metrics() });
  process.stdout.write(`t1612d outbox: ${moved} dead letters moved back to the outbox\n`);
  return 0;
}

async function cmdMigrate(configFile: string | undefined): Promise<number> {
  const config = loadConfig(configFile);
  const logger: Logger = createLogger({ level: config.logLevel, destination: pino.destination({ fd: 2, sync: true }) });
  const r = await migrateKnownIps(config, { logger });
  process.stdout.write(
    `t1612d migrate: ${r.moved} known IPs moved to the sharded layout (${r.buckets} buckets), ${r.expired} past the retention dropped\n`,
  );
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  // `rules check` has options of its own (--no-sysdig, -h): hand it everything after the verb.
  if (argv[0] === 'rules') {
    if (argv[1] !== 'check') {
      process.stderr.write(`t1612d rules: unknown sub-command ${argv[1] ?? '(none)'}; did you mean 'rules check'?\n`);
      return 2;
    }
    return runRulesCheck(argv.slice(2), process.stdout);
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        settings: { type: 'boolean' },
      },
    });
  } catch (err) {
    process.stderr.write(`t1612d: ${describeError(err)}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`t1612d ${version()}\n`);
    return 0;
  }
  if (values.settings) {
    for (const s of describeSettings()) process.stdout.write(`${s.env}\t${s.yaml}\t${JSON.stringify(s.default)}\n`);
    return 0;
  }
  const [command = 'run', ...rest] = positionals;
  try {
    switch (command) {
      case 'run':
        tuneHeap();
        return await cmdRun(values.config);
      case 'replay':
        return await cmdReplay(rest[0], values.config);
      case 'demo':
        return await runDemo({ out: process.stdout });
      case 'outbox':
        return await cmdOutbox(rest[0], values.config);
      case 'migrate':
        return await cmdMigrate(values.config);
      default:
        process.stderr.write(`t1612d: unknown command ${command}\n${USAGE}\n`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`t1612d: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`t1612d: ${describeError(err)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // One-shot commands end here even if a library left a handle open; stdout is flushed first.
    process.stdout.write('', () => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`t1612d: ${describeError(err)}\n`);
    process.exit(1);
  },
);
