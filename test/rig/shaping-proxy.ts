import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cleanup } from './daemon.ts';

/** Slice of bytes sent at once on the shared link (keeps concurrent blobs interleaved fairly). */
const SLICE = 64 * 1024;

export interface ShapingProxyOptions {
  /** Loopback address to listen on. */
  host: string;
  /** TCP port; default 0 (any free port). */
  port?: number;
  /** The registry behind it, `http://host:port`. */
  upstream: string;
  /** Rate of the link all blob bodies share, bytes per second; undefined = unshaped. */
  rateBytesPerSec?: number;
  t?: Cleanup;
}

/** One blob GET that went through the proxy. */
export interface ProxiedBlob {
  digest: string;
  /** The client's address (which node fetched it). */
  client: string;
  range?: string;
  status: number;
  /** Body bytes sent to the client. */
  bytes: number;
  /** The proxy cut the connection or the client went away before the end. */
  cut: boolean;
}

export interface ShapingProxyHandle {
  /** `http://host:port` */
  readonly url: string;
  /** `host:port` as used in image references. */
  readonly host: string;
  /** Blob body bytes sent to clients so far (every blob GET). */
  blobBytes(): number;
  /** Every blob GET so far. */
  blobs(): ProxiedBlob[];
  /** Set (or clear, undefined) the link rate. */
  setRate(bytesPerSec: number | undefined): void;
  /** The next GET of `digest` is cut (socket destroyed) after `afterBytes` body bytes. Resolves when it happened. */
  cutNext(digest: string, afterBytes: number): Promise<ProxiedBlob>;
  /**
   * The next GET of `digest` stops after `afterBytes` body bytes until `release` is called; `reached`
   * resolves once those bytes are sent. A test sees what the client does with a blob it has only in part.
   */
  holdNext(digest: string, afterBytes: number): { reached: Promise<ProxiedBlob>; release(): void };
  /** The next GET of `digest` has one byte flipped at `offset` (once). */
  corruptNext(digest: string, offset: number): void;
  /** Forget the counters. */
  reset(): void;
  stop(): Promise<void>;
}

/** A GET held after some bytes until the test releases it. */
interface Hold {
  afterBytes: number;
  reached: (b: ProxiedBlob) => void;
  released: Promise<void>;
}

/** A shared link: bytes of all streams pass one virtual clock at `rate` bytes/s. */
class Link {
  private next = 0;
  rate: number | undefined;
  constructor(rate: number | undefined) {
    this.rate = rate;
  }
  async take(n: number): Promise<void> {
    if (this.rate === undefined) return;
    const now = performance.now();
    this.next = Math.max(this.next, now) + (n / this.rate) * 1000;
    const wait = this.next - now;
    if (wait > 1) await sleep(wait);
  }
}

/**
 * An HTTP proxy in front of a registry for tests: every request is forwarded as is; blob bodies
 * (`GET /v2/…/blobs/<digest>`) share one link at a set rate, are counted, and can be cut, held or
 * corrupted on command.
 */
export async function startShapingProxy(opts: ShapingProxyOptions): Promise<ShapingProxyHandle> {
  const target = new URL(opts.upstream);
  const link = new Link(opts.rateBytesPerSec);
  let log: ProxiedBlob[] = [];
  const cuts = new Map<string, { afterBytes: number; done: (b: ProxiedBlob) => void }>();
  const corrupts = new Map<string, number>();
  const holds = new Map<string, Hold>();
  const sockets = new Set<Socket>();

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const m = /^\/v2\/.+\/blobs\/([a-z0-9]+:[a-f0-9]+)(?:\?.*)?$/.exec(req.url ?? '');
    const digest = req.method === 'GET' ? m?.[1] : undefined;
    const up = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
      },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (digest === undefined || (upRes.statusCode ?? 0) >= 300) {
          upRes.pipe(res);
          return;
        }
        const entry: ProxiedBlob = {
          digest,
          client: req.socket.remoteAddress ?? '',
          ...(req.headers.range ? { range: req.headers.range } : {}),
          status: upRes.statusCode ?? 0,
          bytes: 0,
          cut: false,
        };
        log.push(entry);
        const cut = cuts.get(digest);
        if (cut) cuts.delete(digest);
        const flip = corrupts.get(digest);
        if (flip !== undefined) corrupts.delete(digest);
        const hold = holds.get(digest);
        if (hold) holds.delete(digest);
        void relay(upRes, res, entry, cut, flip, hold);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
    res.on('close', () => up.destroy());
  };

  async function relay(
    upRes: IncomingMessage,
    res: ServerResponse,
    entry: ProxiedBlob,
    cut: { afterBytes: number; done: (b: ProxiedBlob) => void } | undefined,
    flip: number | undefined,
    hold: Hold | undefined,
  ): Promise<void> {
    try {
      for await (const chunk of upRes as AsyncIterable<Buffer>) {
        for (let off = 0; off < chunk.length; off += SLICE) {
          let piece = chunk.subarray(off, Math.min(chunk.length, off + SLICE));
          if (cut && entry.bytes + piece.length >= cut.afterBytes) {
            piece = piece.subarray(0, Math.max(0, cut.afterBytes - entry.bytes));
          }
          if (flip !== undefined && flip >= entry.bytes && flip < entry.bytes + piece.length) {
            piece = Buffer.from(piece);
            const i = flip - entry.bytes;
            piece[i] = (piece[i] as number) ^ 0xff;
          }
          if (hold && entry.bytes + piece.length >= hold.afterBytes) {
            // Send up to the hold, wait for the release, then go on with the rest of the slice.
            const head = piece.subarray(0, hold.afterBytes - entry.bytes);
            await link.take(head.length);
            if (res.destroyed) throw new Error('client went away');
            entry.bytes += head.length;
            if (!res.write(head)) await once(res, 'drain');
            hold.reached(entry);
            await hold.released;
            piece = piece.subarray(head.length);
            hold = undefined;
          }
          await link.take(piece.length);
          if (res.destroyed) throw new Error('client went away');
          entry.bytes += piece.length;
          if (!res.write(piece)) await once(res, 'drain');
          if (cut && entry.bytes >= cut.afterBytes) {
            entry.cut = true;
            res.socket?.destroy();
            upRes.destroy();
            cut.done(entry);
            return;
          }
        }
      }
      res.end();
    } catch {
      entry.cut = true;
      res.destroy();
      upRes.destroy();
    }
  }

  const server = createServer(handler);
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.listen(opts.port ?? 0, opts.host);
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const handle: ShapingProxyHandle = {
    url: `http://${opts.host}:${port}`,
    host: `${opts.host}:${port}`,
    blobBytes: () => log.reduce((n, b) => n + b.bytes, 0),
    blobs: () => [...log],
    setRate(r) {
      link.rate = r;
    },
    cutNext(digest, afterBytes) {
      return new Promise((resolve) => cuts.set(digest, { afterBytes, done: resolve }));
    },
    holdNext(digest, afterBytes) {
      const reached = Promise.withResolvers<ProxiedBlob>();
      const released = Promise.withResolvers<void>();
      holds.set(digest, { afterBytes, reached: reached.resolve, released: released.promise });
      return { reached: reached.promise, release: () => released.resolve() };
    },
    corruptNext(digest, offset) {
      corrupts.set(digest, offset);
    },
    reset() {
      log = [];
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  opts.t?.after(() => handle.stop());
  return handle;
}
