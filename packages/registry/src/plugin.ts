import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import type { Peer, PeerAuth, Router } from '@ferry/interface';
import {
  type DistributionRequest,
  errorBody,
  firstHeader,
  OciError,
  type OciErrorCode,
  parseDistributionPath,
  parseRange,
  publicMessage,
  tagKey,
} from '@ferry/oci';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Agent } from 'undici';
import { type RegistryObserver, type RequestTrace, requestRecorder, traceOf } from './events.ts';
import { HashWorker } from './hasher.ts';
import { createLocalServer } from './local.ts';
import { createLatencyTracker, MIRRORED_HEADER, type MirrorSettings, mirror } from './mirror.ts';
import { PeerBook } from './peer-book.ts';
import { FOLLOWER_HEADER } from './peer-feed.ts';
import { answerProof } from './peer-fetch.ts';
import { preferring } from './peers.ts';
import type { RefPolicy } from './policy.ts';
import { type PullThrough, requestContext } from './pull-through.ts';
import { createTagResolver, type TagResolverOptions } from './tag-resolver.ts';
import { askPeersForTag, RESOLVED_AT_HEADER } from './tags.ts';
import type { ContentSource } from './types.ts';

export type { RegistryObserver, RegistryRequestEvent, RequestOutcome } from './events.ts';
export type { TagEvent, TagOutcome, TagResolverOptions } from './tag-resolver.ts';

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
  /**
   * Deadline for the headers (a whole manifest, a HEAD) of the one peer left to ask, with no other to
   * fail over to: the only holder of a digest may answer late on a loaded node, and giving up is a
   * 404 (a failed pull while the upstream is down). Default 10000 ms.
   */
  lastPeerTimeoutMs?: number;
  /** Start the next peer when the current one has not answered within this delay. 'adaptive' (default): p90 of observed latency; Infinity: no hedging. */
  hedgeDelayMs?: number | 'adaptive';
  /**
   * Try the providers found in random order (default true), so that no peer id decides who is asked;
   * peers that failed lately always go last. false keeps the router's order (deterministic tests).
   */
  randomPeerOrder?: boolean;
  /** Largest manifest accepted from a peer or fingerprinted locally. Default 4 MiB. */
  maxManifestBytes?: number;
  /** Receives one event per request. */
  observer?: RegistryObserver;
  /**
   * Peer HTTP authentication (@ferry/p2p's `createPeerAuth` with the cluster's network key). Set: a
   * request is a peer's only when it carries a valid signature (`X-Ferry-Mirrored` grants nothing), a
   * client that is neither local nor an authenticated peer gets 403, requests to peers are signed and
   * their answers must be signed by the provider found. Absent (no network key): the header decides.
   */
  peerAuth?: PeerAuth;
  /** Clients that are the node's own containerd (and pinner): by address. Default: loopback only. */
  isLocalClient?: (ip: string) => boolean;
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

/** A step's answer: the reply is sent (a step never hands the reply itself back: it is a thenable). */
const SENT = Symbol('sent');

/**
 * Bytes a mirrored blob may run ahead of the client: the relay keeps the peer's connection draining
 * while the client's socket takes the last chunks, and queued chunks leave in one writev.
 */
const RELAY_BUFFER_BYTES = 1024 * 1024;

/** `/v2/*` params, query and headers as fastify validates them. */
const contentSchema = {
  params: { type: 'object', properties: { '*': { type: 'string' } }, required: ['*'] },
  querystring: { type: 'object', properties: { ns: { type: 'string', maxLength: 1024 } } },
  headers: {
    type: 'object',
    properties: { range: { type: 'string' }, [MIRRORED_HEADER]: { type: 'string' } },
  },
} as const;

type ContentRequest = FastifyRequest<{ Params: { '*': string }; Querystring: { ns?: string } }>;

/** The fastify plugin serving the OCI distribution pull API (`/v2/…`); it only adds routes. */
export const registry: FastifyPluginAsync<RegistryPluginOptions> = async (app, opts) => {
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
    lastPeerTimeoutMs: opts.lastPeerTimeoutMs ?? 10_000,
    hedgeDelayMs: opts.hedgeDelayMs ?? 'adaptive',
    latency: createLatencyTracker(),
    maxManifestBytes,
    book: new PeerBook({ onQuarantine: (digest, peer) => opts.observer?.onQuarantine?.({ digest, peer }) }),
    randomOrder: opts.randomPeerOrder ?? true,
    hashing: new HashWorker(),
    ...(opts.peerAuth === undefined ? {} : { auth: opts.peerAuth }),
    userAgent: 'ferry',
  };
  if (ownDispatcher !== undefined) app.addHook('onClose', async () => ownDispatcher.destroy());
  app.addHook('onClose', async () => settings.hashing.close());
  const local = createLocalServer(source, maxManifestBytes, (bytes, mediaType) =>
    settings.book.learnManifest(bytes, mediaType),
  );
  const tags =
    opts.tags === undefined
      ? undefined
      : createTagResolver(opts.tags, {
          source,
          askPeers: (q, signal) => askPeersForTag(settings, q, signal),
        });
  const peerAuth = opts.peerAuth;
  const isLocalClient = opts.isLocalClient ?? isLoopback;
  /** The authenticated peer asking (with peer auth), or whether the header says a peer asks (without). */
  const peerOf = (req: FastifyRequest): string | undefined => {
    if (peerAuth === undefined)
      return firstHeader(req.headers[MIRRORED_HEADER])?.toLowerCase() === 'true' ? '' : undefined;
    return peerAuth.verifyRequest({ method: req.method, pathAndQuery: req.url }, req.headers);
  };
  // Checked once per request (a nonce is accepted once).
  const asking = new WeakMap<FastifyRequest, string | null>();
  const isMirrored = (req: FastifyRequest) => {
    if (!asking.has(req)) asking.set(req, peerOf(req) ?? null);
    return asking.get(req) !== null;
  };
  const recorder = requestRecorder(app.log, opts.observer, isMirrored);

  const apiVersion = async (_req: FastifyRequest, reply: FastifyReply) =>
    reply.header('docker-distribution-api-version', 'registry/2.0').send({});

  const fail = (
    reply: FastifyReply,
    status: number,
    code: OciErrorCode,
    message: string,
    detail?: unknown,
  ) => {
    const t = traceOf(reply.request);
    t.error ??= message;
    return reply
      .code(status)
      .type('application/json')
      .send(errorBody(code, message, detail));
  };

  /** Step 3 (tags): the request by digest, or the reply already sent (404: deferred, miss, not held). */
  const resolveTag = async (
    req: FastifyRequest,
    reply: FastifyReply,
    d: DistributionRequest & { tag: string },
    t: RequestTrace,
  ): Promise<{ d: DistributionRequest; routeKey: string; holders: Peer[] } | typeof SENT> => {
    const resolver = tags as NonNullable<typeof tags>;
    const ref = { registry: d.registry, repository: d.repository, tag: d.tag };
    const mode = resolver.modeFor(ref);
    if (!t.mirrored) t.tag = { mode, outcome: mode === 'upstream' ? 'deferred' : 'miss' };
    if (mode === 'upstream') {
      t.outcome = 'filtered';
      fail(reply, 404, 'MANIFEST_UNKNOWN', 'tag mode upstream: ask the upstream');
      return SENT;
    }
    if (t.mirrored) {
      // A peer asks which digest the tag names: the newest of our record and our image, held here.
      const own = await resolver.ownAnswer(ref, req.log);
      if (own === undefined) {
        t.outcome = 'miss';
        fail(reply, 404, 'MANIFEST_UNKNOWN', 'not held by this node');
        return SENT;
      }
      reply.header(RESOLVED_AT_HEADER, String(own.resolvedAt));
      return { d: byDigest(d, own.digest), routeKey: t.key as string, holders: [] };
    }
    if (mode === 'cluster') return { d, routeKey: t.key as string, holders: [] };
    const verdict = await resolver.verify(ref, t.signal, req.log);
    t.tag = verdict.event;
    if (!verdict.ok) {
      t.outcome = 'miss';
      fail(reply, 404, 'MANIFEST_UNKNOWN', verdict.reason);
      return SENT;
    }
    const digest = verdict.resolution.digest;
    return { d: byDigest(d, digest), routeKey: digest, holders: verdict.holders };
  };

  /** Step 4: serve content held here (or in the spool); undefined when it is not. */
  const serveHeld = async (
    req: FastifyRequest,
    reply: FastifyReply,
    d: DistributionRequest,
    t: RequestTrace,
    outcome: 'local' | 'pull-through',
  ): Promise<boolean> => {
    try {
      const served = await local.serve(reply, d, {
        range: firstHeader(req.headers.range),
        head: t.method === 'HEAD',
        signal: t.signal,
        onHeld: async (status, headers) => {
          t.outcome = outcome;
          // An authenticated peer gets the answer signed by this node (the provider it found).
          const nonce = peerAuth === undefined ? undefined : peerNonce(req);
          if (t.mirrored && nonce !== undefined && peerAuth !== undefined)
            reply.headers(
              await peerAuth.signResponse(answerProof(nonce, status, { ...reply.getHeaders(), ...headers })),
            );
        },
        onBytes: (n) => {
          t.bytes += n;
        },
        onBodyError: (err) => {
          t.error = err.message;
          req.log.warn({ err, key: t.key }, 'local blob read failed mid-body');
        },
      });
      if (!served.held) return false;
      if ('error' in served) {
        if (served.error.status === 404) t.outcome = 'miss';
        t.error = served.error.message;
        fail(
          reply,
          served.error.status,
          served.error.code,
          publicMessage(served.error.code, served.error.message),
        );
      }
      return true;
    } catch (err) {
      req.log.warn({ err, key: t.key }, 'local content read failed');
      if (!t.mirrored && !t.signal.aborted) return false;
      fail(
        reply,
        404,
        d.kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN',
        `${t.key}: local read failed`,
      );
      return true;
    }
  };

  /** Step 5: fetch from peers and relay (or, when no peer holds a digest, pull it through the spool). */
  const serveFromPeers = async (
    req: FastifyRequest,
    reply: FastifyReply,
    d: DistributionRequest,
    routeKey: string,
    holders: Peer[],
    t: RequestTrace,
  ) => {
    const unknown: OciErrorCode = d.kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN';
    const range = d.kind === 'blobs' ? firstHeader(req.headers.range) : undefined;
    if (range !== undefined) {
      try {
        parseRange(range, Number.MAX_SAFE_INTEGER);
      } catch (err) {
        t.error = (err as Error).message;
        return fail(reply, 416, 'RANGE_INVALID', publicMessage('RANGE_INVALID', 'invalid Range'));
      }
    }
    const s = holders.length === 0 ? settings : { ...settings, router: preferring(holders, settings.router) };
    const target = {
      kind: d.kind,
      method: t.method,
      registry: d.registry,
      repository: d.repository,
      reference: d.reference,
      ...(d.digest === undefined ? {} : { digest: d.digest }),
      key: routeKey,
      ...(range === undefined ? {} : { range }),
    };
    const result = await mirror(s, target, t.signal, (n, peerId) => {
      t.bytes += n;
      t.peers ??= [];
      const credit = t.peers.find((p) => p.id === peerId);
      if (credit !== undefined) credit.bytes += n;
      else t.peers.push({ id: peerId, bytes: n });
    });
    t.attempts = result.attempts;
    if (result.resolveMs !== undefined) t.resolveMs = result.resolveMs;
    if (t.signal.aborted) return reply.hijack(); // the client is gone: nothing to answer
    if (!result.ok && result.status === 404 && d.digest !== undefined && pullThrough !== undefined) {
      // Nobody holds it complete: fetch it (or follow the node fetching it) into the spool.
      const entry = await pullThrough.start({ ...d, digest: d.digest });
      if (entry !== undefined && !t.signal.aborted) {
        if (await serveHeld(req, reply, d, t, 'pull-through')) return reply;
        t.outcome = 'miss';
        t.error = `pull-through: ${entry.error?.message ?? 'not available'}`;
      }
    }
    if (!result.ok) {
      if (result.status === 416) {
        if (result.contentRange) reply.header('content-range', result.contentRange);
        t.error = result.message;
        return fail(reply, 416, 'RANGE_INVALID', publicMessage('RANGE_INVALID', 'invalid Range'));
      }
      // The details (peers, network errors) go to the event and the logs, never to the client.
      t.error = result.message;
      return fail(reply, 404, unknown, 'not available from the cluster', {
        attempts: result.attempts,
      });
    }
    t.outcome = 'peer';
    t.peer = result.peer.id;
    reply.code(result.status).headers(result.headers);
    if (t.method === 'HEAD') return reply.send();
    if (result.buffer !== undefined) {
      settings.book.learnManifest(result.buffer, result.headers['content-type']);
      t.bytes = result.buffer.length;
      t.peers = [{ id: result.peer.id, bytes: result.buffer.length }];
      return reply.send(result.buffer);
    }
    const body = Readable.from(result.stream as AsyncGenerator<Buffer>, {
      objectMode: false,
      highWaterMark: RELAY_BUFFER_BYTES,
    });
    body.once('error', (err) => {
      t.error = err.message;
      req.log.warn({ err, key: t.key }, 'mirrored blob stream failed');
    });
    return reply.send(body);
  };

  /** One content request, in the order of its steps. */
  const handle = async (req: ContentRequest, reply: FastifyReply) => {
    if (req.params['*'] === '') return apiVersion(req, reply);
    const t = traceOf(req);
    // 0. Who asks: the node's own containerd (by address) or an authenticated peer; nobody else.
    if (peerAuth !== undefined && !t.mirrored && !isLocalClient(req.ip)) {
      t.error = 'neither a local client nor an authenticated peer';
      return fail(reply, 403, 'DENIED', 'this registry serves its node and authenticated peers only');
    }
    // 1. Parse the path.
    let d: DistributionRequest;
    try {
      const ns = req.query.ns === '' ? undefined : req.query.ns;
      d = parseDistributionPath(`/v2/${req.params['*']}`, ns, defaultRegistry);
    } catch (err) {
      // The log keeps what was wrong; the client never reads its own input back.
      t.error = (err as Error).message;
      if (err instanceof OciError)
        return fail(reply, err.status, err.code, publicMessage(err.code, 'invalid request'));
      return fail(reply, 404, 'NAME_UNKNOWN', publicMessage('NAME_UNKNOWN', 'not found'));
    }
    t.kind = d.kind;
    t.registry = d.registry;
    t.repository = d.repository;
    t.key = d.tag !== undefined ? tagKey(d.registry, d.repository, d.tag) : (d.digest as string);
    const unknown: OciErrorCode = d.kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN';

    // 2. Policy: a refused tag (filter, or the policy's own mode upstream) is deferred to the upstream.
    if (policy !== undefined && !policy.allows(d.registry, d.repository, d.tag)) {
      t.outcome = 'filtered';
      if (d.tag !== undefined && tags !== undefined && !t.mirrored)
        t.tag = { mode: tags.modeFor({ ...d, tag: d.tag }), outcome: 'deferred' };
      return fail(reply, 404, unknown, 'not mirrored by policy');
    }

    // 3. Tag modes: the tag becomes a digest (or the answer is a 404).
    let routeKey = t.key;
    let holders: Peer[] = [];
    if (d.tag !== undefined && tags !== undefined) {
      const r = await resolveTag(req, reply, { ...d, tag: d.tag }, t);
      if (r === SENT) return reply;
      ({ d, routeKey, holders } = r);
    }

    // 4. Local content.
    if (await serveHeld(req, reply, d, t, 'local')) return reply;
    t.outcome = 'miss';
    if (t.mirrored) return fail(reply, 404, unknown, 'not held by this node');

    // 5. Peers.
    return serveFromPeers(req, reply, d, routeKey, holders, t);
  };

  app.route({ method: ['GET', 'HEAD'], url: '/v2', handler: apiVersion });
  app.route<{ Params: { '*': string }; Querystring: { ns?: string } }>({
    method: ['GET', 'HEAD'],
    url: '/v2/*',
    schema: contentSchema,
    ...recorder,
    errorHandler: (err, req, reply) => {
      if ((err as { validation?: unknown }).validation === undefined) throw err;
      req.log.debug({ err }, 'invalid request');
      return fail(reply, 400, 'NAME_INVALID', 'invalid request parameters');
    },
    handler: (req, reply) =>
      pullThrough === undefined
        ? handle(req, reply)
        : // Spool reads know whether a peer asks (bytes shared while in flight, followers).
          requestContext.run(
            {
              mirrored: isMirrored(req),
              remote: firstHeader(req.headers[FOLLOWER_HEADER])?.slice(0, 100) ?? req.ip,
            },
            () => handle(req, reply),
          ),
  });
};

/** The request nonce of a peer's signed request (the auth header's `nonce=`). */
function peerNonce(req: FastifyRequest): string | undefined {
  return /\bnonce=([A-Za-z0-9_-]+)/.exec(firstHeader(req.headers['x-ferry-auth']) ?? '')?.[1];
}

/** 127.0.0.0/8 and ::1 (also as IPv4-mapped). */
export function isLoopback(ip: string): boolean {
  const v4 = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
  return (isIP(v4) === 4 && v4.startsWith('127.')) || ip === '::1';
}

/** The same request, by digest. */
function byDigest(d: DistributionRequest, digest: string): DistributionRequest {
  return { kind: d.kind, registry: d.registry, repository: d.repository, reference: digest, digest };
}
