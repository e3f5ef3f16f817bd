import { Readable } from 'node:stream';
import {
  type ByteRange,
  type DistributionRequest,
  errorBody,
  fingerprintMediaType,
  isManifestMediaType,
  OciError,
  type OciErrorCode,
  parseDistributionPath,
  parseRange,
  tagKey,
} from '@ferry/oci';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { Agent } from 'undici';
import { createLatencyTracker, MIRRORED_HEADER, type MirrorSettings, mirror } from './mirror.ts';
import type { RefPolicy } from './policy.ts';
import type { ContentInfo, ContentSource, Router } from './types.ts';

/** How a registry request ended. */
export type RequestOutcome = 'local' | 'peer' | 'miss' | 'filtered' | 'invalid';

/** One event per content request (manifests/blobs), fired when the response ends or the client goes away. */
export interface RegistryRequestEvent {
  method: 'GET' | 'HEAD';
  /** Absent when the path did not parse. */
  kind?: 'manifests' | 'blobs';
  registry?: string;
  repository?: string;
  /** Router key: the digest, or the tag key '<registry>/<repo>:<tag>'. */
  key?: string;
  /** The request carried `X-Ferry-Mirrored: true` (a peer asking). */
  mirrored: boolean;
  outcome: RequestOutcome;
  /** Id of the peer that served it (outcome 'peer'). */
  peer?: string;
  /** Peer fetches started (mirror path only). */
  attempts?: number;
  /** Body bytes written to the client. */
  bytes: number;
  /** HTTP status sent; 499 when the client went away before any headers. */
  status: number;
  durationMs: number;
  /** Time until the router yielded the first peer (mirror path, when one came). */
  resolveMs?: number;
  /** The response did not complete: the client went away, or the body failed mid-way. */
  aborted: boolean;
  /** Why it was a miss / invalid / failed mid-stream. */
  error?: string;
}

/** Receives registry events (the agent maps them to metrics and logs). */
export interface RegistryObserver {
  onRequest?(event: RegistryRequestEvent): void;
}

/** Options of the registry plugin. */
export interface RegistryPluginOptions {
  /** The node's local content (containerd in production). */
  source: ContentSource;
  /** Finds peers holding a digest or tag key. */
  router: Router;
  /** What may be answered from the cluster; default: everything, tags included. */
  policy?: RefPolicy;
  /** Registry assumed when a request has no `?ns=`. Default 'docker.io'. */
  defaultRegistry?: string;
  /** How long to wait for the router to yield a (next) peer while no fetch is in flight. Default 20 ms. */
  mirrorResolveTimeoutMs?: number;
  /** Most peers tried per request. Default 3. */
  mirrorResolveRetries?: number;
  /** Deadline for a peer's response headers on blob GETs (also the body idle timeout). Default 2000 ms. */
  peerTimeoutMs?: number;
  /** Deadline for a whole manifest fetch or HEAD from a peer. Default 1000 ms. */
  peerMetadataTimeoutMs?: number;
  /** Start the next peer when the current one has not answered within this delay. 'adaptive' (default): p90 of observed latency; Infinity: no hedging. */
  hedgeDelayMs?: number | 'adaptive';
  /** Hash full blob bodies fetched from peers and break the response (last chunk held back) on mismatch. Default true. */
  verifyBlobs?: boolean;
  /** Largest manifest accepted from a peer or fingerprinted locally. Default 4 MiB. */
  maxManifestBytes?: number;
  /** Receives one event per request. */
  observer?: RegistryObserver;
  /** undici dispatcher for peer requests; default: an Agent owned (and closed) by the plugin. */
  dispatcher?: import('undici').Dispatcher;
}

const MiB = 1024 * 1024;

interface Ctx {
  event: RegistryRequestEvent;
  started: number;
}

async function readAll(stream: NodeJS.ReadableStream, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += b.length;
    if (size > limit) {
      (stream as Readable).destroy?.();
      throw new Error(`content larger than ${limit} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

async function* counted(
  source: AsyncIterable<Buffer | string>,
  onBytes: (n: number) => void,
  onEnd: () => void,
): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of source) {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      onBytes(b.length);
      yield b;
    }
  } finally {
    onEnd();
  }
}

const registryPlugin: FastifyPluginAsync<RegistryPluginOptions> = async (app, opts) => {
  const source = opts.source;
  const policy = opts.policy;
  const defaultRegistry = opts.defaultRegistry ?? 'docker.io';
  const maxManifestBytes = opts.maxManifestBytes ?? 4 * MiB;
  const peerTimeoutMs = opts.peerTimeoutMs ?? 2000;
  const ownDispatcher =
    opts.dispatcher === undefined
      ? new Agent({ keepAliveTimeout: 30_000, connect: { timeout: Math.min(peerTimeoutMs, 1000) } })
      : undefined;
  const settings: MirrorSettings = {
    router: opts.router,
    dispatcher: opts.dispatcher ?? (ownDispatcher as Agent),
    resolveTimeoutMs: opts.mirrorResolveTimeoutMs ?? 20,
    retries: Math.max(1, opts.mirrorResolveRetries ?? 3),
    peerTimeoutMs,
    metadataTimeoutMs: opts.peerMetadataTimeoutMs ?? 1000,
    hedgeDelayMs: opts.hedgeDelayMs ?? 'adaptive',
    latency: createLatencyTracker(),
    maxManifestBytes,
    verifyBlobs: opts.verifyBlobs ?? true,
    userAgent: 'ferry',
  };
  if (ownDispatcher !== undefined) app.addHook('onClose', async () => ownDispatcher.destroy());
  const fingerprints = new Map<string, string | undefined>();

  const emit = (ctx: Ctx, reply: FastifyReply) => {
    ctx.event.status = ctx.event.aborted && !reply.raw.headersSent ? 499 : reply.raw.statusCode;
    ctx.event.durationMs = performance.now() - ctx.started;
    try {
      opts.observer?.onRequest?.(ctx.event);
    } catch (err) {
      app.log.warn({ err }, 'registry observer threw');
    }
  };

  const sendError = (
    reply: FastifyReply,
    ctx: Ctx,
    status: number,
    code: OciErrorCode,
    message: string,
    detail?: unknown,
  ) => {
    if (ctx.event.error === undefined) ctx.event.error = message;
    return reply
      .code(status)
      .type('application/json')
      .send(errorBody(code, message, detail));
  };

  /** Media type of local content, fingerprinting small content without one. Returns the bytes when read. */
  const mediaTypeOf = async (info: ContentInfo): Promise<{ mediaType?: string; bytes?: Buffer }> => {
    if (info.mediaType !== undefined) return { mediaType: info.mediaType };
    if (fingerprints.has(info.digest)) {
      const mt = fingerprints.get(info.digest);
      return mt === undefined ? {} : { mediaType: mt };
    }
    if (info.size > maxManifestBytes) return {};
    const bytes = await readAll(await source.open(info.digest), maxManifestBytes);
    const mt = fingerprintMediaType(bytes);
    if (fingerprints.size >= 256) fingerprints.delete(fingerprints.keys().next().value as string);
    fingerprints.set(info.digest, mt);
    return mt === undefined ? { bytes } : { mediaType: mt, bytes };
  };

  /** Serves local content; false when the node does not hold it. */
  const serveLocal = async (
    req: FastifyRequest,
    reply: FastifyReply,
    ctx: Ctx,
    d: DistributionRequest,
    signal: AbortSignal,
  ): Promise<boolean | FastifyReply> => {
    const info =
      d.tag !== undefined
        ? await source.resolveTag(d.registry, d.repository, d.tag)
        : await source.stat(d.digest as string);
    if (info === undefined) return false;
    let mediaType: string | undefined;
    let bytes: Buffer | undefined;
    if (d.kind === 'manifests') {
      ({ mediaType, bytes } = await mediaTypeOf(info));
      if (mediaType === undefined || !isManifestMediaType(mediaType)) {
        ctx.event.outcome = 'miss';
        return sendError(reply, ctx, 404, 'MANIFEST_UNKNOWN', `${info.digest} is not a manifest`);
      }
    } else {
      mediaType = info.mediaType ?? 'application/octet-stream';
    }
    let range: ByteRange | undefined;
    if (d.kind === 'blobs') {
      try {
        range = parseRange(header(req, 'range'), info.size);
      } catch (err) {
        reply.header('content-range', `bytes */${info.size}`);
        return sendError(reply, ctx, 416, 'RANGE_INVALID', (err as Error).message);
      }
    }
    ctx.event.outcome = 'local';
    reply.header('content-type', mediaType);
    reply.header('docker-content-digest', info.digest);
    reply.header('etag', `"${info.digest}"`);
    if (d.kind === 'blobs') reply.header('accept-ranges', 'bytes');
    if (range !== undefined) {
      reply.code(206);
      reply.header('content-range', `bytes ${range.start}-${range.end}/${info.size}`);
      reply.header('content-length', String(range.end - range.start + 1));
    } else {
      reply.header('content-length', String(info.size));
    }
    if (req.method === 'HEAD') return reply.send();
    if (bytes !== undefined && range === undefined) {
      ctx.event.bytes = bytes.length;
      return reply.send(bytes);
    }
    if (info.size === 0) return reply.send(Buffer.alloc(0));
    let stream: NodeJS.ReadableStream;
    try {
      stream = await source.open(info.digest, range);
    } catch (err) {
      if (signal.aborted) throw err;
      // Gone between stat and open (GC): not held after all.
      reply.removeHeader('content-type');
      reply.removeHeader('docker-content-digest');
      reply.removeHeader('etag');
      reply.removeHeader('accept-ranges');
      reply.removeHeader('content-range');
      reply.removeHeader('content-length');
      reply.code(200);
      ctx.event.outcome = 'miss';
      return false;
    }
    const destroy = () => (stream as Readable).destroy?.();
    signal.addEventListener('abort', destroy, { once: true });
    const body = Readable.from(
      counted(
        stream as AsyncIterable<Buffer>,
        (n) => {
          ctx.event.bytes += n;
        },
        () => {
          signal.removeEventListener('abort', destroy);
          destroy();
        },
      ),
      { objectMode: false },
    );
    return reply.send(body);
  };

  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const ctx: Ctx = {
      started: performance.now(),
      event: {
        method: req.method === 'HEAD' ? 'HEAD' : 'GET',
        mirrored: header(req, MIRRORED_HEADER)?.toLowerCase() === 'true',
        outcome: 'invalid',
        bytes: 0,
        status: 0,
        durationMs: 0,
        aborted: false,
      },
    };
    const ac = new AbortController();
    let finished = false;
    reply.raw.once('finish', () => {
      finished = true;
    });
    reply.raw.once('close', () => {
      ctx.event.aborted = !finished;
      if (!finished) ac.abort(new Error('client went away'));
      emit(ctx, reply);
    });
    const signal = ac.signal;

    // 1. parse
    const path = req.url.split('?', 1)[0] as string;
    const q = req.query as Record<string, string | string[] | undefined>;
    const ns = Array.isArray(q.ns) ? q.ns[0] : q.ns;
    let d: DistributionRequest;
    try {
      d = parseDistributionPath(path, ns === '' ? undefined : ns, defaultRegistry);
    } catch (err) {
      if (err instanceof OciError)
        return sendError(reply, ctx, err.status, err.code, err.message, err.detail);
      return sendError(reply, ctx, 404, 'NAME_UNKNOWN', (err as Error).message);
    }
    const ev = ctx.event;
    ev.kind = d.kind;
    ev.registry = d.registry;
    ev.repository = d.repository;
    ev.key = d.tag !== undefined ? tagKey(d.registry, d.repository, d.tag) : (d.digest as string);
    const unknown: OciErrorCode = d.kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN';

    // 2. policy
    if (policy !== undefined && !policy.allows(d.registry, d.repository, d.tag)) {
      ev.outcome = 'filtered';
      return sendError(reply, ctx, 404, unknown, `${ev.key} is not mirrored by policy`);
    }

    // 3. local content
    try {
      const local = await serveLocal(req, reply, ctx, d, signal);
      if (local !== false) return local;
    } catch (err) {
      req.log.warn({ err, key: ev.key }, 'local content read failed');
      if (ev.mirrored || signal.aborted)
        return sendError(reply, ctx, 404, unknown, `local read failed: ${(err as Error).message}`);
    }
    ev.outcome = 'miss';
    if (ev.mirrored) return sendError(reply, ctx, 404, unknown, `${ev.key} not held by this node`);

    // 4. mirror from peers
    const range = d.kind === 'blobs' ? header(req, 'range') : undefined;
    if (range !== undefined) {
      try {
        parseRange(range, Number.MAX_SAFE_INTEGER);
      } catch (err) {
        return sendError(reply, ctx, 416, 'RANGE_INVALID', (err as Error).message);
      }
    }
    const result = await mirror(
      settings,
      {
        kind: d.kind,
        method: ev.method,
        registry: d.registry,
        repository: d.repository,
        reference: d.reference,
        ...(d.digest === undefined ? {} : { digest: d.digest }),
        key: ev.key,
        ...(range === undefined ? {} : { range }),
      },
      signal,
      (n) => {
        ev.bytes += n;
      },
    );
    ev.attempts = result.attempts;
    if (signal.aborted) {
      // The client is gone (event already emitted): nothing to answer.
      reply.hijack();
      return;
    }
    if (result.resolveMs !== undefined) ev.resolveMs = result.resolveMs;
    if (!result.ok) {
      if (result.status === 416) {
        if (result.contentRange) reply.header('content-range', result.contentRange);
        return sendError(reply, ctx, 416, 'RANGE_INVALID', result.message);
      }
      return sendError(reply, ctx, 404, unknown, `${ev.key}: ${result.message}`, {
        attempts: result.attempts,
      });
    }
    ev.outcome = 'peer';
    ev.peer = result.peer.id;
    reply.code(result.status).headers(result.headers);
    if (ev.method === 'HEAD') return reply.send();
    if (result.buffer !== undefined) {
      ev.bytes = result.buffer.length;
      return reply.send(result.buffer);
    }
    const stream = result.stream as AsyncGenerator<Buffer>;
    const body = Readable.from(stream, { objectMode: false });
    body.once('error', (err) => {
      ev.error = err.message;
      req.log.warn({ err, key: ev.key }, 'mirrored blob stream failed');
    });
    return reply.send(body);
  };

  app.route({
    method: ['GET', 'HEAD'],
    url: '/v2',
    handler: async (_req, reply) => reply.header('docker-distribution-api-version', 'registry/2.0').send({}),
  });
  app.route({
    method: ['GET', 'HEAD'],
    url: '/v2/*',
    handler: async (req, reply) => {
      const rest = (req.params as { '*': string })['*'];
      if (rest === '') return reply.header('docker-distribution-api-version', 'registry/2.0').send({});
      return handle(req, reply);
    },
  });
};

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The fastify plugin serving the OCI distribution pull API (`/v2/…`). */
export const registry = fp(registryPlugin, { fastify: '5.x', name: '@ferry/registry' });
