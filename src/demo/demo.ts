/**
 * `t1612d demo`: everything in one process, nothing installed — a Falco gRPC emulator replays
 * a scripted benign build and a scripted T1612 attack, the daemon runs with in-memory stores,
 * and a local webhook receiver prints each alert. Exits 0 when exactly the attack was caught.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { pino } from 'pino';
import { resolveConfig } from '../config/config.js';
import { Daemon } from '../daemon.js';
import { FalcoEmulator, responseFromJson } from './emulator.js';
import { createLogger } from '../ops/logger.js';
import { DemoReceiver } from './receiver.js';
import { demoScript, renderScript, ATTACK_HOST, ATTACKER_IP, BENIGN_HOST, REGISTRY_CIDR } from './script.js';

export interface DemoOptions {
  out: Writable;
  /** Log level for the daemon's own logs (stderr). @default 'warn' */
  logLevel?: string;
}

export async function runDemo(options: DemoOptions): Promise<number> {
  const started = Date.now();
  const print = (s: string): void => void options.out.write(`${s}\n`);
  const dir = mkdtempSync(join(tmpdir(), 't1612d-demo-'));
  const secret = 'demo-secret';
  const receiver = new DemoReceiver(secret, print);
  const emulator = await FalcoEmulator.start({ address: `unix://${join(dir, 'falco.sock')}` });
  let daemon: Daemon | undefined;
  try {
    const webhookUrl = await receiver.listen();
    const config = resolveConfig({
      env: {},
      overrides: {
        falcoGrpcAddress: emulator.address,
        falcoGrpcPollIntervalMs: 20,
        httpAddress: '',
        environment: 'demo',
        allowCidrs: [REGISTRY_CIDR],
        webhookUrl,
        webhookSecret: secret,
        deliveryBackoffInitialMs: 100,
        logLevel: options.logLevel ?? 'warn',
      },
    });
    const logger = createLogger({ level: config.logLevel, destination: pino.destination({ fd: 2, sync: true }) });
    daemon = new Daemon(config, { logger });
    await daemon.start();

    print('t1612d demo: Falco emulator -> t1612d (in-memory stores) -> local webhook receiver');
    print(`  ${BENIGN_HOST}: a CI container fetches packages, then a CI job runs docker build (benign)`);
    print(`  ${ATTACK_HOST}: a remote client builds an image over the exposed Docker API; its RUN step downloads from ${ATTACKER_IP} (T1612)`);
    print('');
    // Stamp the script as if it had just happened (Falco reports events after the fact).
    const startNs = BigInt(Date.now() - 2_000) * 1_000_000n;
    for (const ev of await renderScript(startNs)) emulator.enqueue(responseFromJson(ev));

    // Every scripted event decided, then every alert delivered: an unexpected alert for the
    // benign build would be in the receiver too.
    const scripted = demoScript().length;
    const deadline = Date.now() + 8_000;
    while ((await daemon.metrics.value('t1612d_falco_events_total')) < scripted && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await daemon.settle();
    const raised = await daemon.metrics.value('t1612d_alerts_total');
    await receiver.waitFor(raised, Math.max(0, deadline - Date.now()));
    await daemon.close();

    const alerts = receiver.received.map((r) => r.alert);
    const attack = alerts.filter((a) => a.hostname === ATTACK_HOST && a.destination.ip === ATTACKER_IP);
    const benign = alerts.filter((a) => a.hostname === BENIGN_HOST);
    const ok = attack.length === 1 && benign.length === 0 && alerts.length === 1 && receiver.received.every((r) => r.signatureValid);
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    print(
      ok
        ? `t1612d demo: OK — 2 builds, 1 alert (${attack[0]?.severity} ${attack[0]?.destination.ip}), benign build quiet, ${secs}s`
        : `t1612d demo: UNEXPECTED — ${alerts.length} alert(s): ${attack.length} for the attack, ${benign.length} for the benign build, ${secs}s`,
    );
    return ok ? 0 : 1;
  } finally {
    await daemon?.close();
    await emulator.close();
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
