import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import type { Peer, PeerAuth, PeerResponseProof } from '@ferry/interface';
import { MediaTypes } from '@ferry/oci';
import type { FastifyInstance } from 'fastify';
import { request as undiciRequest } from 'undici';
import {
  createMemoryContentSource,
  createMemoryRouter,
  createRegistryServer,
  type MemoryContentSource,
  type RegistryRequestEvent,
  type RegistryServerOptions,
} from '../src/index.ts';

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** A small image: a layer, a config and an OCI manifest (without mediaType info in the store). */
export function sampleImage(layerSize = 256 * 1024) {
  const layer = randomBytes(layerSize);
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers' } }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length },
      layers: [{ mediaType: MediaTypes.ociLayerGzip, digest: sha256(layer), size: layer.length }],
    }),
  );
  return { layer, config, manifest, layerDigest: sha256(layer), manifestDigest: sha256(manifest) };
}

export function storeImage(source: MemoryContentSource, img: ReturnType<typeof sampleImage>, tag?: string) {
  source.add(img.layer);
  source.add(img.config);
  source.add(img.manifest);
  if (tag !== undefined) source.tag('docker.io', 'library/app', tag, img.manifestDigest);
}

/** Collects observer events. */
export function events() {
  const list: RegistryRequestEvent[] = [];
  return { list, observer: { onRequest: (e: RegistryRequestEvent) => list.push(e) } };
}

/** Polls until `fn` returns a truthy value (deadline 5 s). */
export async function until<T>(fn: () => T | undefined | false, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

let nextHost = 1;
/** A unique loopback address per call, within this test process's block. */
export function loopback(): string {
  const n = nextHost++;
  const block = 100 + (process.pid % 100);
  return `127.${block}.${Math.floor(n / 250)}.${(n % 250) + 1}`;
}

/** Starts a real Ferry registry server (a peer) on a fresh loopback address. */
export async function startPeer(
  t: TestContext,
  id: string,
  opts: Partial<RegistryServerOptions> & { source?: MemoryContentSource } = {},
): Promise<{ peer: Peer; app: FastifyInstance; source: MemoryContentSource }> {
  const source = opts.source ?? createMemoryContentSource();
  const app = await createRegistryServer({ router: createMemoryRouter(), ...opts, source });
  const host = loopback();
  await app.listen({ host, port: 0 });
  t.after(() => app.close());
  const addr = app.server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return { peer: { id, host, port: addr.port }, app, source };
}

/** Starts a raw HTTP server acting as a (misbehaving) peer. */
export async function startRawPeer(
  t: TestContext,
  id: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ peer: Peer; server: Server; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    requests.push(req);
    handler(req, res);
  });
  const host = loopback();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return { peer: { id, host, port: addr.port }, server, requests };
}

/**
 * A peer `id` in front of `target`: every request is passed on as is; `shape` may change the answer's
 * headers, delay it, or hold it forever (return false: never answered).
 */
export async function startRelay(
  t: TestContext,
  id: string,
  target: Peer,
  shape: (req: IncomingMessage, headers: Record<string, string>) => boolean | Promise<boolean> = () => true,
): Promise<Peer> {
  const relay = await startRawPeer(t, id, async (req, res) => {
    const up = await undiciRequest(`http://${target.host}:${target.port}${req.url}`, {
      method: req.method as 'GET' | 'HEAD',
      headers: req.headers as Record<string, string>,
    });
    const body = Buffer.from(await up.body.arrayBuffer());
    const headers = { ...up.headers } as Record<string, string>;
    if (!(await shape(req, headers))) return;
    res.writeHead(up.statusCode, headers);
    res.end(body);
  });
  return relay.peer;
}

/** A peer that accepts TCP connections and never answers. */
export async function startSilentPeer(
  t: TestContext,
  id: string,
): Promise<{ peer: Peer; sockets: Socket[]; closed: () => number }> {
  const sockets: Socket[] = [];
  let closed = 0;
  const server: NetServer = createNetServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    socket.on('close', () => {
      closed++;
    });
    socket.resume(); // read (and drop) the request, so a client hang-up is seen
  });
  const host = loopback();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return { peer: { id, host, port: addr.port }, sockets, closed: () => closed };
}

/**
 * A peer serving one blob correctly (200, 206 for ranges), except that it destroys the socket after
 * `breakAfter` body bytes for the first `flakyTimes` requests (Infinity: always).
 */
export async function startFlakyPeer(
  t: TestContext,
  id: string,
  blob: Buffer,
  breakAfter: number,
  flakyTimes = Number.POSITIVE_INFINITY,
) {
  let served = 0;
  const ranges: (string | undefined)[] = [];
  const raw = await startRawPeer(t, id, (req, res) => {
    const flaky = served++ < flakyTimes;
    const range = req.headers.range;
    ranges.push(range);
    let start = 0;
    let end = blob.length - 1;
    const m = range === undefined ? null : /^bytes=(\d+)-(\d*)$/.exec(range);
    if (m !== null) {
      start = Number(m[1]);
      if (m[2] !== '') end = Math.min(Number(m[2]), blob.length - 1);
    }
    const headers = {
      'content-type': 'application/octet-stream',
      'content-length': String(end - start + 1),
      'docker-content-digest': sha256(blob),
      'accept-ranges': 'bytes',
      ...(m === null ? {} : { 'content-range': `bytes ${start}-${end}/${blob.length}` }),
    };
    res.writeHead(m === null ? 200 : 206, headers);
    if (req.method === 'HEAD') return res.end();
    const body = blob.subarray(start, end + 1);
    if (!flaky || body.length <= breakAfter) return res.end(body);
    res.write(body.subarray(0, breakAfter), () => {
      // Give the bytes a moment to leave, then cut the connection.
      setImmediate(() => res.socket?.destroy());
    });
  });
  return { ...raw, ranges };
}

/**
 * Peer auth that signs in the clear, bound to the signer's id (the registry only sees headers; the real
 * one is @ferry/p2p's createPeerAuth): an answer verifies only for the peer that made it.
 */
export function clearAuth(peerId: string): PeerAuth {
  const text = (id: string, p: PeerResponseProof) =>
    JSON.stringify([id, p.nonce, p.status, p.digest, p.length, p.resolvedAt]);
  return {
    peerId,
    signRequest() {
      const nonce = randomBytes(16).toString('base64url');
      return { nonce, headers: { 'x-ferry-auth': `clear peer=${peerId} nonce=${nonce}` } };
    },
    verifyRequest: (_r, h) => /peer=(\S+)/.exec(String(h['x-ferry-auth'] ?? ''))?.[1],
    signResponse: async (p) => ({ 'x-proof': text(peerId, p) }),
    verifyResponse: async (id, p, h) => h['x-proof'] === text(id, p),
  };
}
