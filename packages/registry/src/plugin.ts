import type { OutgoingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import type { Peer, Router, TagMode, TagResolution, UpstreamOutcome } from '@ferry/interface';
import {
  type ByteRange,
  type DistributionRequest,
  errorBody,
  fingerprintMediaType,
  firstHeader,
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
import { writeFileBody } from './file-body.ts';
import { createLatencyTracker, MIRRORED_HEADER, type MirrorSettings, mirror } from './mirror.ts';
import type { RefPolicy } from './policy.ts';
import { FOLLOWER_HEADER, type PullThrough, requestContext } from './pull-through.ts';
import { askPeersForTag, RESOLVED_AT_HEADER } from './tags.ts';
import type { ContentInfo, ContentSource, TagRecordStore, TagUpstream } from './types.ts';

/** How a registry request ended. */
export type RequestOutcome = 'local' | 'peer' | 'pull-through' | 'miss' | 'filtered' | 'invalid';

/**
 * How a tag was resolved: `upstream` (the upstream named the digest), `last-known` (upstream unavailable:
 * the newest digest the cluster resolved), `cluster` (mode cluster: local image or peers), `deferred`
 * (404 on purpose so containerd asks the upstream: mode upstream, or the upstream wants credentials),
 * `miss` (nothing to answer: unknown upstream, no last-known, nothing in the cluster).
 */
export type TagOutcome = 'upstream' | 'last-known' | 'cluster' | 'deferred' | 'miss';

/** The tag part of a request event (tag requests from the local containerd, when `tags` is set). */
export interface TagEvent {
  mode: TagMode;
  outcome: TagOutcome;
  /** The digest the tag was resolved to, when it was. */
  digest?: string;
  /** Where the digest came from ('upstream', or for last-known: 'last-known' (DB), 'local' or 'peer'). */
  source?: TagResolution['source'];
  /** Time the upstream took to answer (or fail), when asked. */
  upstreamMs?: number;
  /** What the upstream said: resolved, unavailable, unauthorized, not-found. */
  upstream?: UpstreamOutcome['kind'];
  /** Age of the last-known digest served (outcome last-known, when its resolution time is known). */
  lastKnownAgeMs?: number;
}

/** Tag modes and what `verify` needs. */
export interface TagResolverOptions {
  /** The mode of a tag (e.g. RefPolicy.modeFor). */
  modeFor(registry: string, repository: string, tag: string): TagMode;
  /** The upstream registries; without it, `verify` defers every tag (404). */
  upstream?: TagUpstream;
  /** Where resolutions are recorded and last-known digests read; without it only local images and peers count. */
  lastKnown?: TagRecordStore;
  /** Deadline for the upstream's answer. Default 1000 ms. */
  upstreamTimeoutMs?: number;
  /** Deadline for peers' last-known answers during an upstream outage. Default 1000 ms. */
  peerAnswerTimeoutMs?: number;
  /** Most peers asked for their last-known answer. Default 3. */
  maxPeerAnswers?: number;
  /** Clock (ms since epoch) for resolvedAt and ages. Default Date.now. */
  now?: () => number;
}

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
  /** Tag requests of the local containerd when tag modes are on (`tags` option). */
  tag?: TagEvent;
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
  /**
   * Tag modes (cluster / upstream / verify) and the upstream client and last-known store `verify` uses.
   * Absent: every tag the policy allows is answered in mode `cluster`.
   */
  tags?: TagResolverOptions;
  /** undici dispatcher for peer requests; default: an Agent owned (and closed) by the plugin. */
  dispatcher?: import('undici').Dispatcher;
  /**
   * First-pull sharing: a digest no peer holds is fetched from the upstream into the spool (by this
   * node or, when it is in flight elsewhere, from that node) and served while it arrives. Absent:
   * such a request is a 404 and containerd asks the upstream.
   */
  pullThrough?: PullThrough;
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

/**
 * Bytes a mirrored blob may run ahead of the client: the relay keeps the peer's connection draining
 * while the client's socket takes the last chunks, and queued chunks leave in one writev.
 */
const RELAY_BUFFER_BYTES = 1024 * 1024;

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
  const pullThrough = opts.pullThrough;
  const source = pullThrough === undefined ? opts.source : pullThrough.source(opts.source);
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
    const tagEv = ctx.event.tag;
    if (tagEv?.mode === 'cluster') {
      const served = ctx.event.outcome === 'local' || ctx.event.outcome === 'peer';
      tagEv.outcome = served && !ctx.event.aborted ? 'cluster' : 'miss';
    }
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

  const tags = opts.tags;
  const now = tags?.now ?? Date.now;
  const upstreamTimeoutMs = tags?.upstreamTimeoutMs ?? 1000;

  /** The newest of this node's record and its local image for a tag, whose manifest is held here. */
  const ownAnswer = async (
    registry: string,
    repository: string,
    tag: string,
    req: FastifyRequest,
  ): Promise<TagResolution | undefined> => {
    const [rec, img] = await Promise.all([
      tags?.lastKnown?.get(registry, repository, tag).catch((err: unknown) => {
        req.log.warn({ err, registry, repository, tag }, 'last-known store read failed');
        return undefined;
      }),
      source.resolveTag(registry, repository, tag).catch(() => undefined),
    ]);
    const candidates: TagResolution[] = [];
    if (rec !== undefined) candidates.push(rec);
    if (img !== undefined)
      candidates.push({ ...resolutionOf(registry, repository, tag, img), resolvedAt: 0, source: 'local' });
    candidates.sort((a, b) => b.resolvedAt - a.resolvedAt);
    for (const c of candidates) {
      // The local image is held (resolveTag answers only what is there); a record may name gone content.
      if (c.source === 'local') return c;
      if ((await source.stat(c.digest).catch(() => undefined)) !== undefined) return c;
    }
    return undefined;
  };

  /** Mode verify: the digest to serve, or why the answer is a 404 (tagEv says which outcome). */
  const verifyTag = async (
    registry: string,
    repository: string,
    tag: string,
    tagEv: TagEvent,
    signal: AbortSignal,
    req: FastifyRequest,
    holders: Peer[],
  ): Promise<TagResolution | string> => {
    const upstream = tags?.upstream;
    if (upstream === undefined) {
      tagEv.outcome = 'deferred';
      return 'no upstream client configured for verify';
    }
    const t0 = performance.now();
    const outcome = await askUpstream(upstream, registry, repository, tag, signal, upstreamTimeoutMs);
    tagEv.upstreamMs = performance.now() - t0;
    tagEv.upstream = outcome.kind;
    if (outcome.kind === 'resolved') {
      const r: TagResolution = {
        registry,
        repository,
        tag,
        digest: outcome.digest,
        ...(outcome.mediaType === undefined ? {} : { mediaType: outcome.mediaType }),
        ...(outcome.size === undefined ? {} : { size: outcome.size }),
        resolvedAt: now(),
        source: 'upstream',
      };
      try {
        await tags?.lastKnown?.record(r);
      } catch (err) {
        req.log.warn({ err, registry, repository, tag }, 'could not record the resolution');
      }
      tagEv.outcome = 'upstream';
      tagEv.digest = r.digest;
      tagEv.source = 'upstream';
      return r;
    }
    if (outcome.kind === 'unauthorized') {
      tagEv.outcome = 'deferred';
      return upstream.hasCredentials(registry)
        ? `the upstream refused the configured credentials (${outcome.status}); containerd resolves it`
        : `the upstream wants credentials (${outcome.status}) and none are configured; containerd resolves it with its own`;
    }
    if (outcome.kind === 'not-found') {
      tagEv.outcome = 'miss';
      return 'the upstream does not know this tag';
    }
    if (signal.aborted) return 'client went away';
    // The upstream cannot answer: the newest digest the cluster resolved.
    const best = await lastKnownOf(registry, repository, tag, signal, req, holders);
    if (best === undefined) {
      tagEv.outcome = 'miss';
      return `upstream unavailable (${outcome.reason}) and no last-known digest in the cluster`;
    }
    tagEv.outcome = 'last-known';
    tagEv.digest = best.digest;
    tagEv.source = best.source;
    if (best.resolvedAt > 0) tagEv.lastKnownAgeMs = Math.max(0, now() - best.resolvedAt);
    return best;
  };

  /** Newest of: our record, our local image (resolvedAt unknown = 0), peers' answers. Records a newer peer answer. */
  const lastKnownOf = async (
    registry: string,
    repository: string,
    tag: string,
    signal: AbortSignal,
    req: FastifyRequest,
    holders: Peer[],
  ): Promise<TagResolution | undefined> => {
    const [rec, img, answers] = await Promise.all([
      tags?.lastKnown?.get(registry, repository, tag).catch((err: unknown) => {
        req.log.warn({ err, registry, repository, tag }, 'last-known store read failed');
        return undefined;
      }),
      source.resolveTag(registry, repository, tag).catch(() => undefined),
      askPeersForTag(
        settings,
        {
          registry,
          repository,
          tag,
          key: tagKey(registry, repository, tag),
          timeoutMs: tags?.peerAnswerTimeoutMs ?? 1000,
          maxPeers: Math.max(1, tags?.maxPeerAnswers ?? 3),
        },
        signal,
      ),
    ]);
    const candidates: TagResolution[] = [];
    if (rec !== undefined) candidates.push({ ...rec, source: 'last-known' });
    if (img !== undefined)
      candidates.push({ ...resolutionOf(registry, repository, tag, img), resolvedAt: 0, source: 'local' });
    for (const a of answers) {
      candidates.push({
        registry,
        repository,
        tag,
        digest: a.digest,
        ...(a.mediaType === undefined ? {} : { mediaType: a.mediaType }),
        ...(a.size === undefined ? {} : { size: a.size }),
        resolvedAt: a.resolvedAt,
        source: 'peer',
      });
    }
    let best: TagResolution | undefined;
    for (const c of candidates) if (best === undefined || c.resolvedAt > best.resolvedAt) best = c;
    if (best !== undefined) {
      const digest = best.digest;
      holders.push(...answers.filter((a) => a.digest === digest).map((a) => a.peer));
    }
    if (best?.source === 'peer' && tags?.lastKnown !== undefined) {
      // Survive a restart during the outage; the resolution keeps its original time.
      if (rec === undefined || best.resolvedAt > rec.resolvedAt) {
        try {
          await tags.lastKnown.record(best);
        } catch (err) {
          req.log.warn({ err, registry, repository, tag }, 'could not record the peer answer');
        }
      }
    }
    return best;
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
    const file = source.openFile === undefined ? undefined : await source.openFile(info.digest);
    if (file !== undefined) {
      // The fast path writes the body itself from recycled buffers (file-body.ts).
      reply.hijack();
      const res = reply.raw;
      res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
      try {
        await writeFileBody(res, file, range?.start ?? 0, range?.end ?? info.size - 1, signal, (n) => {
          ctx.event.bytes += n;
        });
      } catch (err) {
        ctx.event.error = (err as Error).message;
        req.log.warn({ err, key: ctx.event.key }, 'local blob read failed mid-body');
        res.destroy(err as Error);
      } finally {
        await file.close().catch(() => {});
      }
      return reply;
    }
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
      // A refused tag (filter, or the policy's own mode upstream) is deferred to the upstream.
      if (d.tag !== undefined && opts.tags !== undefined && !ev.mirrored)
        ev.tag = { mode: opts.tags.modeFor(d.registry, d.repository, d.tag), outcome: 'deferred' };
      return sendError(reply, ctx, 404, unknown, `${ev.key} is not mirrored by policy`);
    }

    // 2b. tag modes
    let routeKey = ev.key;
    /** Peers known to hold the digest a tag resolved to (they answered it): tried before a lookup. */
    const holders: Peer[] = [];
    if (d.tag !== undefined && tags !== undefined) {
      const mode = tags.modeFor(d.registry, d.repository, d.tag);
      if (!ev.mirrored) ev.tag = { mode, outcome: 'miss' };
      if (mode === 'upstream') {
        ev.outcome = 'filtered';
        if (ev.tag !== undefined) ev.tag.outcome = 'deferred';
        return sendError(reply, ctx, 404, unknown, `${ev.key}: tag mode upstream, ask the upstream`);
      }
      if (ev.mirrored) {
        // A peer asks which digest the tag names: the newest of our record and our image, held here.
        const best = await ownAnswer(d.registry, d.repository, d.tag, req);
        if (best === undefined) {
          ev.outcome = 'miss';
          return sendError(reply, ctx, 404, unknown, `${ev.key} not held by this node`);
        }
        reply.header(RESOLVED_AT_HEADER, String(best.resolvedAt));
        d = byDigest(d, best.digest);
      } else if (mode === 'verify') {
        const tagEv = ev.tag as TagEvent;
        const r = await verifyTag(d.registry, d.repository, d.tag, tagEv, signal, req, holders);
        if (typeof r === 'string') {
          ev.outcome = 'miss';
          return sendError(reply, ctx, 404, unknown, `${ev.key}: ${r}`);
        }
        d = byDigest(d, r.digest);
        routeKey = r.digest;
      }
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
      holders.length === 0 ? settings : { ...settings, router: preferring(holders, settings.router) },
      {
        kind: d.kind,
        method: ev.method,
        registry: d.registry,
        repository: d.repository,
        reference: d.reference,
        ...(d.digest === undefined ? {} : { digest: d.digest }),
        key: routeKey,
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
    if (!result.ok && result.status === 404 && d.digest !== undefined && pullThrough !== undefined) {
      // Nobody holds it complete: fetch it (or follow the node fetching it) into the spool.
      const entry = await pullThrough.start({
        kind: d.kind,
        registry: d.registry,
        repository: d.repository,
        digest: d.digest,
      });
      if (entry !== undefined && !signal.aborted) {
        const served = await serveLocal(req, reply, ctx, d, signal);
        if (served !== false) {
          ev.outcome = 'pull-through';
          return served;
        }
        ev.outcome = 'miss';
        ev.error = `pull-through: ${entry.error?.message ?? 'not available'}`;
      }
    }
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
    const body = Readable.from(stream, { objectMode: false, highWaterMark: RELAY_BUFFER_BYTES });
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
      if (pullThrough === undefined) return handle(req, reply);
      // Spool reads know whether a peer asks (bytes shared while in flight, followers).
      const mirrored = header(req, MIRRORED_HEADER)?.toLowerCase() === 'true';
      const follower = header(req, FOLLOWER_HEADER)?.slice(0, 100);
      return requestContext.run({ mirrored, remote: follower ?? req.ip }, () => handle(req, reply));
    },
  });
};

function resolutionOf(
  registry: string,
  repository: string,
  tag: string,
  info: ContentInfo,
): Omit<TagResolution, 'resolvedAt' | 'source'> {
  return {
    registry,
    repository,
    tag,
    digest: info.digest,
    size: info.size,
    ...(info.mediaType === undefined ? {} : { mediaType: info.mediaType }),
  };
}

/** A router that yields `first` (peers known to hold the key), then the router's other providers. */
function preferring(first: Peer[], router: Router): Router {
  return {
    async *lookup(key, options) {
      for (const p of first) {
        if (options.signal.aborted) return;
        yield p;
      }
      for await (const p of router.lookup(key, options)) if (!first.some((f) => f.id === p.id)) yield p;
    },
  };
}

/** The same request, by digest. */
function byDigest(d: DistributionRequest, digest: string): DistributionRequest {
  return { kind: d.kind, registry: d.registry, repository: d.repository, reference: digest, digest };
}

/** Asks the upstream with a deadline; every failure (and the deadline) is 'unavailable'. */
async function askUpstream(
  upstream: TagUpstream,
  registry: string,
  repository: string,
  tag: string,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<UpstreamOutcome> {
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<UpstreamOutcome>((resolve) => {
    timer = setTimeout(() => {
      ac.abort(new Error(`no answer within ${timeoutMs} ms`));
      resolve({ kind: 'unavailable', reason: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
  });
  try {
    return await Promise.race([
      upstream.resolveTag(registry, repository, tag, { signal: ac.signal }).catch(
        (err: unknown): UpstreamOutcome => ({
          kind: 'unavailable',
          reason: err instanceof Error ? err.message : String(err),
        }),
      ),
      deadline,
    ]);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}

function header(req: FastifyRequest, name: string): string | undefined {
  return firstHeader(req.headers[name]);
}

/** The fastify plugin serving the OCI distribution pull API (`/v2/…`). */
export const registry = fp(registryPlugin, { fastify: '5.x', name: '@ferry/registry' });
