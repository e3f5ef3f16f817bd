import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createMemoryLastKnownStore, type UpstreamClient, type UpstreamOutcome } from '@ferry/resolver';
import { Agent, request } from 'undici';
import { createPinner, createPinnerServer, type PatchOperation } from '../src/index.ts';

export const D1 = `sha256:${'1'.repeat(64)}`;
export const D2 = `sha256:${'2'.repeat(64)}`;
export const D3 = `sha256:${'3'.repeat(64)}`;

/** A scripted upstream: `answers` maps `<registry>/<repo>:<tag>` to an outcome (default unavailable). */
export function fakeUpstream(
  answers: Record<string, UpstreamOutcome | (() => Promise<UpstreamOutcome>)> = {},
) {
  const calls: string[] = [];
  const client: Pick<UpstreamClient, 'resolveTag'> = {
    async resolveTag(registry, repository, tag, opts) {
      const key = `${registry}/${repository}:${tag}`;
      calls.push(key);
      const a = answers[key];
      if (typeof a === 'function') {
        return await new Promise<UpstreamOutcome>((resolve) => {
          opts?.signal?.addEventListener('abort', () => resolve({ kind: 'unavailable', reason: 'timeout' }), {
            once: true,
          });
          a().then(resolve);
        });
      }
      return a ?? { kind: 'unavailable', reason: 'connection refused' };
    },
  };
  return { client, calls, answers };
}

/** An AdmissionReview for a Pod. */
export function review(
  pod: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): { apiVersion: string; kind: string; request: Record<string, unknown> } {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'uid-1',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'apps',
      operation: 'CREATE',
      object: pod,
      ...extra,
    },
  };
}

export function pod(spec: Record<string, unknown>, metadata: Record<string, unknown> = { name: 'p' }) {
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec };
}

/** Decodes a review answer's patch. */
export function patchOf(body: unknown): PatchOperation[] {
  const r = (body as { response: { patch?: string } }).response;
  return r.patch ? JSON.parse(Buffer.from(r.patch, 'base64').toString('utf8')) : [];
}

/**
 * A test CA (openssl CLI) that issues server certificates with SANs (`DNS:` names, `IP:` addresses).
 * `issue(prefix)` writes `<prefix>.crt` and `<prefix>.key` in `dir`.
 */
export function makeCa(dir = mkdtempSync(join(tmpdir(), 'ferry-pinner-tls-'))) {
  mkdirSync(dir, { recursive: true });
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=ferry-test-ca',
  ]);
  let serial = 1;
  const issue = (prefix: string, names: string[]) => {
    const san = names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
    writeFileSync(join(dir, `${prefix}.ext`), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
    run(['req', ...ec, '-keyout', `${prefix}.key`, '-out', `${prefix}.csr`, '-subj', `/CN=${names[0]}`]);
    run([
      'x509',
      '-req',
      '-in',
      `${prefix}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-set_serial',
      String(serial++),
      '-out',
      `${prefix}.crt`,
      '-days',
      '2',
      '-extfile',
      `${prefix}.ext`,
    ]);
    return { cert: join(dir, `${prefix}.crt`), key: join(dir, `${prefix}.key`) };
  };
  return {
    dir,
    caFile: join(dir, 'ca.crt'),
    ca: () => readFileSync(join(dir, 'ca.crt')),
    issue,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Starts a node:http server on host:0, stopped by t.after. */
export async function serve(
  t: { after(fn: () => unknown): void },
  host: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; server: Server }> {
  const server = createServer(handler);
  server.listen(0, host);
  await once(server, 'listening');
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://${host}:${(server.address() as AddressInfo).port}`, server };
}

/**
 * A pinner with a scripted upstream (every tag unavailable) and a memory store, served over TLS on
 * loopback with a test CA; `post(body, contentType?)` sends to /mutate, `get(path)` for the rest.
 */
export async function servedPinner(t: { after(fn: () => unknown): void }) {
  const name = 'ferry-pinner.ferry.svc';
  const ca = makeCa();
  t.after(() => ca.remove());
  const pair = ca.issue('server', [name, '127.0.0.1']);
  const pinner = createPinner({
    upstream: fakeUpstream().client,
    store: createMemoryLastKnownStore(),
    clusterUrl: '',
  });
  const server = await createPinnerServer({ pinner, tlsCertFile: pair.cert, tlsKeyFile: pair.key });
  t.after(() => server.close());
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  const dispatcher = new Agent({ connect: { ca: ca.ca(), servername: name } });
  t.after(() => dispatcher.close());
  const base = `https://127.0.0.1:${port}`;
  return {
    pinner,
    base,
    dispatcher,
    async post(body: string | Readable, contentType: string | undefined = 'application/json') {
      const res = await request(`${base}/mutate`, {
        method: 'POST',
        headers: contentType === undefined ? {} : { 'content-type': contentType },
        body,
        dispatcher,
      });
      return { status: res.statusCode, text: await res.body.text() };
    },
  };
}
