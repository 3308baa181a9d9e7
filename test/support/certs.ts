/**
 * Throwaway PKI for mutual-TLS tests, made with the openssl CLI at test time (nothing
 * checked in, nothing expires in the repository): a CA, a server certificate for
 * 127.0.0.1/localhost, a client certificate from that CA, and a "rogue" CA with its own
 * client certificate that the server does not trust. Generated once per process into a temp
 * dir that is removed at exit.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertPair {
  cert: Buffer;
  key: Buffer;
  certFile: string;
  keyFile: string;
}

export interface TestPki {
  dir: string;
  ca: Buffer;
  caFile: string;
  server: CertPair;
  client: CertPair;
  rogueCa: Buffer;
  rogueCaFile: string;
  /** Signed by the rogue CA: a server trusting only `ca` rejects it. */
  rogueClient: CertPair;
}

let cached: TestPki | undefined;

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=t1612d test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

function makeLeaf(dir: string, name: string, ca: string, cn: string, ext: string): CertPair {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, [
    'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`,
  ]);
  openssl(dir, [
    'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`,
    '-set_serial', String(Date.now()), '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`,
  ]);
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  return { cert: readFileSync(certFile), key: readFileSync(keyFile), certFile, keyFile };
}

/** The test PKI, generated on first use. */
export function testPki(): TestPki {
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), 't1612d-pki-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  makeCa(dir, 'ca');
  makeCa(dir, 'rogue-ca');
  const server = makeLeaf(
    dir, 'server', 'ca', 'localhost',
    'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n',
  );
  const clientExt = 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n';
  const client = makeLeaf(dir, 'client', 'ca', 't1612d-client', clientExt);
  const rogueClient = makeLeaf(dir, 'rogue-client', 'rogue-ca', 't1612d-rogue', clientExt);
  cached = {
    dir,
    ca: readFileSync(join(dir, 'ca.crt')),
    caFile: join(dir, 'ca.crt'),
    server,
    client,
    rogueCa: readFileSync(join(dir, 'rogue-ca.crt')),
    rogueCaFile: join(dir, 'rogue-ca.crt'),
    rogueClient,
  };
  return cached;
}
