/**
 * The pinner's HTTPS server: `POST /mutate` (AdmissionReview in and out), `GET /healthz`, `GET /metrics`.
 * The certificate and key are read from files and re-read when they change: before each new connection's
 * handshake the files are re-stat'ed (inode, size, mtime), so a rotated Secret is served from the next
 * connection on, with no restart and no watcher to miss a symlink swap.
 */
import { readFileSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createSecureContext } from 'node:tls';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { BodyError, jsonDeeperThan, readBoundedBody } from './body.ts';
import type { Pinner } from './pinner.ts';

/** Options of createPinnerServer. */
export interface PinnerServerOptions {
  pinner: Pinner;
  /** PEM certificate (chain) file served to the API server. */
  tlsCertFile: string;
  /** PEM private key file. */
  tlsKeyFile: string;
  /** Registry served at /metrics. Default: the pinner's. */
  metricsRegistry?: Registry;
  /** Largest AdmissionReview accepted, bytes. Default 8 MiB (a Pod is at most ~1.5 MiB in etcd). */
  bodyLimit?: number;
  /** Deepest JSON nesting accepted. Default 64 (a Pod nests about 12 deep). */
  maxDepth?: number;
  /** Fastify logger (warnings: TLS reload problems). Default: none. */
  logger?: FastifyBaseLogger;
}

/** The running server. */
export interface PinnerServer {
  readonly app: FastifyInstance;
  /** Starts listening; resolves with the bound address. */
  listen(addr: { host: string; port: number }): Promise<{ host: string; port: number }>;
  /** Re-reads the certificate and key if they changed; true when a new pair is in use. */
  reloadTls(): boolean;
  close(): Promise<void>;
}

interface Pair {
  key: Buffer;
  cert: Buffer;
}

function signature(file: string): string {
  const st = statSync(file);
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
}

function readPair(certFile: string, keyFile: string): Pair {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = readFileSync(certFile);
  } catch (err) {
    throw new Error(`pinner TLS certificate ${certFile}: ${(err as Error).message}`);
  }
  try {
    key = readFileSync(keyFile);
  } catch (err) {
    throw new Error(`pinner TLS key ${keyFile}: ${(err as Error).message}`);
  }
  try {
    createSecureContext({ key, cert }); // checks the PEM and that key and certificate match
  } catch (err) {
    throw new Error(`pinner TLS key ${keyFile} / certificate ${certFile}: ${(err as Error).message}`);
  }
  return { key, cert };
}

/** Creates the server (not listening). Throws a clear error when the certificate or key cannot be used. */
export async function createPinnerServer(opts: PinnerServerOptions): Promise<PinnerServer> {
  const { pinner, tlsCertFile, tlsKeyFile } = opts;
  const initial = readPair(tlsCertFile, tlsKeyFile);
  let sig = `${signature(tlsCertFile)} ${signature(tlsKeyFile)}`;
  const bodyLimit = opts.bodyLimit ?? 8 * 1024 * 1024;
  const app = Fastify({
    https: { key: initial.key, cert: initial.cert },
    // Request logs are info-level: fastify's own logger passes only warnings and errors.
    ...(opts.logger ? { loggerInstance: opts.logger.child({}, { level: 'warn' }) } : { logger: false }),
  });
  const log = opts.logger;

  const reloadTls = (): boolean => {
    let next: string;
    try {
      next = `${signature(tlsCertFile)} ${signature(tlsKeyFile)}`;
    } catch (err) {
      log?.warn({ err: (err as Error).message }, 'pinner TLS files unreadable; keeping the current pair');
      return false;
    }
    if (next === sig) return false;
    try {
      const pair = readPair(tlsCertFile, tlsKeyFile);
      (app.server as import('node:https').Server).setSecureContext({ key: pair.key, cert: pair.cert });
      sig = next;
      log?.info({ cert: tlsCertFile }, 'pinner TLS certificate reloaded');
      return true;
    } catch (err) {
      // Mid-rotation (new certificate, old key): keep serving the old pair and look again next time.
      log?.warn({ err: (err as Error).message }, 'pinner TLS files changed but cannot be used yet');
      return false;
    }
  };
  // Runs before the TLS socket is set up for this connection, so the new pair serves this very handshake.
  app.server.prependListener('connection', () => {
    reloadTls();
  });

  const maxDepth = opts.maxDepth ?? 64;
  // The body is read here, not by fastify: bounded (a too-large one is drained, then answered 413) and
  // parsed by the route, so every problem gets the pinner's own short answer.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => {
    readBoundedBody(payload, bodyLimit, 4 * bodyLimit).then(
      (text) => done(null, text),
      (err: Error) => done(err, undefined),
    );
  });

  // Short fixed texts: an error never quotes the request.
  app.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
    if (err instanceof BodyError) {
      pinner.metrics.errors.inc({ reason: err.status === 413 ? 'too-large' : 'bad-request' });
      return reply.code(err.status).send({ error: err.message });
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    pinner.metrics.errors.inc({ reason: status >= 500 ? 'internal' : 'bad-request' });
    return reply.code(status).send({ error: status >= 500 ? 'internal error' : 'bad request' });
  });

  app.post('/mutate', async (req, reply) => {
    const text = typeof req.body === 'string' ? req.body : '';
    if (text.trim() === '') {
      pinner.metrics.errors.inc({ reason: 'bad-request' });
      return reply.code(400).send({ error: 'empty body: expected an AdmissionReview (JSON)' });
    }
    if (jsonDeeperThan(text, maxDepth)) {
      pinner.metrics.errors.inc({ reason: 'bad-request' });
      return reply.code(400).send({ error: `body nests deeper than ${maxDepth} levels` });
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      pinner.metrics.errors.inc({ reason: 'bad-request' });
      return reply.code(400).send({ error: 'body is not JSON: expected an AdmissionReview' });
    }
    const result = await pinner.review(body);
    return reply.code(result.status).type('application/json').send(JSON.stringify(result.body));
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  const registry = opts.metricsRegistry ?? pinner.metrics.registry;
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  await app.ready();

  return {
    app,
    async listen({ host, port }) {
      await app.listen({ host, port });
      const a = app.server.address() as AddressInfo;
      return { host: a.address, port: a.port };
    },
    reloadTls,
    async close() {
      await app.close();
    },
  };
}
