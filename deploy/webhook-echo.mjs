// Demo webhook receiver for `docker compose --profile demo up`: prints every alert t1612d
// POSTs as a short readable summary followed by the JSON body, and checks the
// X-T1612D-Signature HMAC when WEBHOOK_SECRET is set. Plain Node (no dependencies) so it runs
// in a stock node image with this one file mounted. A stand-in for the real receiver (SIEM,
// chat hook, ticketing), not a production service.
//
// Environment: PORT (default 8080; 0 picks a free port), HOST (default 0.0.0.0),
// WEBHOOK_SECRET (optional; same value as t1612d's T1612D_WEBHOOK_SECRET).
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Buffer } from 'node:buffer';
import process from 'node:process';

const MAX_BODY = 1024 * 1024;
const port = Number(process.env.PORT ?? '8080');
const host = process.env.HOST ?? '0.0.0.0';
const secret = process.env.WEBHOOK_SECRET ?? '';
/** Delivery ids already printed: t1612d delivers at least once, so a retry may repeat one. */
const seen = new Set();

/** @param {string} line */
function out(line) {
  process.stdout.write(`${line}\n`);
}

/**
 * Reads a nested value without trusting the body's shape.
 * @param {unknown} obj
 * @param {string[]} path
 * @returns {string}
 */
function pick(obj, ...path) {
  let cur = obj;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return '?';
    cur = /** @type {Record<string, unknown>} */ (cur)[key];
  }
  return cur === null || cur === undefined ? '?' : String(cur);
}

/**
 * @param {Buffer} body
 * @param {string | undefined} header
 * @returns {string}
 */
function signatureStatus(body, header) {
  if (secret === '') return header ? 'not checked (WEBHOOK_SECRET unset)' : 'none';
  const want = Buffer.from(`sha256=${createHmac('sha256', secret).update(body).digest('hex')}`);
  const got = Buffer.from(header ?? '');
  return got.length === want.length && timingSafeEqual(got, want) ? 'valid' : 'INVALID';
}

/**
 * @param {unknown} alert
 * @param {string} signature
 * @param {string} delivery
 */
function printAlert(alert, signature, delivery) {
  out(
    `== ${pick(alert, 'severity').toUpperCase()} ${pick(alert, 'technique', 'id')} on ${pick(alert, 'hostname')} (${pick(alert, 'environment')})`,
  );
  out(`   ${pick(alert, 'summary')}`);
  out(
    `   build     ${pick(alert, 'build', 'session_id')} by ${pick(alert, 'build', 'trigger', 'proc_name')} (rule ${pick(alert, 'build', 'trigger', 'rule')})`,
  );
  out(
    `   reached   ${pick(alert, 'destination', 'ip')}:${pick(alert, 'destination', 'port')} via ${pick(alert, 'connection', 'proc_name')} [${pick(alert, 'connection', 'attribution')}]`,
  );
  out(`   delivery  ${delivery}, signature ${signature}`);
  out(JSON.stringify(alert, null, 2));
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && (req.url === '/healthz' || req.url === '/')) {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'GET, POST' }).end();
    return;
  }
  /** @type {Buffer[]} */
  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on('data', (/** @type {Buffer} */ chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) tooLarge = true;
    else chunks.push(chunk);
  });
  req.on('error', () => res.destroy());
  req.on('end', () => {
    if (tooLarge) {
      out(`-- rejected a ${size}-byte body (limit ${MAX_BODY})`);
      res.writeHead(413).end();
      return;
    }
    const body = Buffer.concat(chunks);
    /** @type {unknown} */
    let alert;
    try {
      alert = JSON.parse(body.toString('utf8'));
    } catch {
      out(`-- rejected a body that is not JSON: ${JSON.stringify(body.toString('utf8').slice(0, 200))}`);
      res.writeHead(400, { 'content-type': 'text/plain' }).end('body is not JSON\n');
      return;
    }
    const deliveryHeader = req.headers['x-t1612d-delivery'];
    const delivery = typeof deliveryHeader === 'string' ? deliveryHeader : '(no delivery id)';
    const sigHeader = req.headers['x-t1612d-signature'];
    const signature = signatureStatus(body, typeof sigHeader === 'string' ? sigHeader : undefined);
    if (typeof deliveryHeader === 'string' && seen.has(deliveryHeader)) {
      out(`-- duplicate delivery ${deliveryHeader} (already shown)`);
    } else {
      if (typeof deliveryHeader === 'string') seen.add(deliveryHeader);
      printAlert(alert, signature, delivery);
    }
    // 2xx acknowledges the delivery; anything else makes t1612d retry.
    res.writeHead(204).end();
  });
});

server.on('clientError', (_err, socket) => socket.destroy());

server.listen(port, host, () => {
  const addr = server.address();
  const bound = addr !== null && typeof addr === 'object' ? addr.port : port;
  out(`webhook-echo listening on http://${host}:${bound}/ (signature check ${secret ? 'on' : 'off'})`);
});

// PID 1 in a container gets no default signal handling, so stop explicitly.
for (const signal of /** @type {const} */ (['SIGTERM', 'SIGINT'])) {
  process.once(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
