/**
 * Names what went wrong in a mutual-TLS connection to Falco's gRPC server, for one clear log
 * line. grpc-js often reports a rejected client certificate only as "Failed to connect", so
 * `probeTls()` repeats the handshake with node:tls to hear what the server actually said.
 */
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import { describeError } from '../model/errors.js';

/** The client's TLS material, as read from the configured files. */
export interface TlsMaterial {
  ca: Buffer | undefined;
  cert: Buffer;
  key: Buffer;
}

/** Give up on a probe that neither fails nor gets the server's SETTINGS in this time. */
const PROBE_TIMEOUT_MS = 2000;

/** Name the TLS problem in an error text, for the log line. */
export function tlsProblem(text: string): string | undefined {
  if (/alert certificate required|peer did not return a certificate/i.test(text)) {
    return 'the server requires a client certificate';
  }
  if (/alert (unknown ca|bad certificate|certificate unknown|certificate expired|certificate revoked|unsupported certificate|access denied|decrypt error|handshake failure)|hung up after receiving our client certificate/i.test(text)) {
    return 'the server rejected our client certificate';
  }
  if (/self[- ]signed|unable to (verify|get local issuer|get issuer)|certificate has expired|not yet valid|altnames|ERR_TLS_CERT|certificate verify failed/i.test(text)) {
    return 'certificate verify failed: the server certificate is not trusted by falco_grpc_ca_file or does not name this address (see falco_grpc_server_name)';
  }
  if (/wrong version number|packet length too long|unknown protocol|http request/i.test(text)) {
    return 'the server does not speak TLS at this address';
  }
  return undefined;
}

/**
 * One TLS handshake to `host:port` with the source's own certificate; resolves with what went
 * wrong, or undefined when the server accepted us (or the probe could not tell). Never rejects.
 */
export function probeTls(
  address: string,
  material: TlsMaterial,
  serverName: string | undefined,
  signal: AbortSignal,
): Promise<string | undefined> {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(address);
  if (!m || signal.aborted) return Promise.resolve(undefined);
  const host = m[1] as string;
  const name = serverName ?? host;
  return new Promise((resolve) => {
    const socket = tls.connect({
      host,
      port: Number(m[2]),
      ca: material.ca,
      cert: material.cert,
      key: material.key,
      ALPNProtocols: ['h2'],
      servername: isIP(name) ? undefined : name,
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
    });
    let done = false;
    const finish = (said: string | undefined): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(said);
    };
    const onAbort = (): void => finish(undefined);
    const timer = setTimeout(() => finish(undefined), PROBE_TIMEOUT_MS);
    timer.unref();
    signal.addEventListener('abort', onAbort, { once: true });
    let handshakeDone = false;
    socket.once('secureConnect', () => {
      handshakeDone = true;
    });
    socket.once('data', () => finish(undefined)); // the server's HTTP/2 SETTINGS: accepted
    socket.once('error', (err) => finish(describeError(err)));
    // A server that checks the client certificate after the handshake (Node, some proxies)
    // just hangs up without a TLS alert.
    socket.once('close', () =>
      finish(
        handshakeDone
          ? 'the server hung up after receiving our client certificate'
          : 'the server closed the connection during the TLS handshake',
      ),
    );
  });
}
