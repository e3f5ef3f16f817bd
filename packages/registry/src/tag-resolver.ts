import type { Peer, TagMode, TagResolution, TagUpstream, UpstreamOutcome } from '@ferry/interface';
import { tagKey } from '@ferry/oci';
import type { PeerTagAnswer, PeerTagQuery } from './tags.ts';
import type { ContentInfo, ContentSource, TagRecordStore } from './types.ts';

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
  /**
   * With no peer answer in at that deadline while a question is pending, how much longer to wait for
   * the first one (a loaded holder answers late). Default 2000 ms.
   */
  peerAnswerGraceMs?: number;
  /** Most peers asked for their last-known answer. Default 3. */
  maxPeerAnswers?: number;
  /** Clock (ms since epoch) for resolvedAt and ages. Default Date.now. */
  now?: () => number;
  /** A peer's resolution time further ahead of this node's clock is a lie (rejected). Default 60 s. */
  clockSkewMs?: number;
  /** A peer's resolution time older than this is implausible (rejected). Default 30 days. */
  maxPeerAnswerAgeMs?: number;
}

/** A tag as requested. */
export interface TagRef {
  registry: string;
  repository: string;
  tag: string;
}

/** What `verify` decided: the resolution to serve by digest, or why the answer is a 404. */
export type TagVerdict =
  | { ok: true; resolution: TagResolution; event: TagEvent; holders: Peer[] }
  | { ok: false; reason: string; event: TagEvent };

/** Where warnings go (the request's logger). */
export interface TagLog {
  warn(obj: object, msg?: string): void;
}

/** Resolves tags by mode; see {@link createTagResolver}. */
export interface TagResolver {
  modeFor(ref: TagRef): TagMode;
  /**
   * A peer's question (a mirrored request): the newest of this node's record and its local image for the
   * tag, whose manifest is held here; undefined when none is.
   */
  ownAnswer(ref: TagRef, log: TagLog): Promise<TagResolution | undefined>;
  /**
   * Mode verify: asks the upstream (recording its answer); when it is unavailable, the newest digest the
   * cluster knows (own record, local image, peers' answers; a newer peer answer is recorded).
   */
  verify(ref: TagRef, signal: AbortSignal, log: TagLog): Promise<TagVerdict>;
}

/** What the tag resolver needs from the node. */
export interface TagResolverDeps {
  source: ContentSource;
  /** Asks peers advertising the tag key which digest it names (`askPeersForTag`). */
  askPeers(q: PeerTagQuery, signal: AbortSignal): Promise<PeerTagAnswer[]>;
}

/** Creates the tag resolver of the registry plugin's `tags` option. */
export function createTagResolver(opts: TagResolverOptions, deps: TagResolverDeps): TagResolver {
  const now = opts.now ?? Date.now;
  const upstreamTimeoutMs = opts.upstreamTimeoutMs ?? 1000;
  const clockSkewMs = opts.clockSkewMs ?? 60_000;
  const maxAgeMs = opts.maxPeerAnswerAgeMs ?? 30 * 24 * 3600_000;
  /** Peer statements are evidence: a time in the future or implausibly old is rejected (0 = unknown). */
  const plausible = (a: PeerTagAnswer) =>
    a.resolvedAt === 0 || (a.resolvedAt <= now() + clockSkewMs && a.resolvedAt >= now() - maxAgeMs);
  const { source } = deps;

  const readRecord = (ref: TagRef, log: TagLog) =>
    opts.lastKnown?.get(ref.registry, ref.repository, ref.tag).catch((err: unknown) => {
      log.warn({ err, ...ref }, 'last-known store read failed');
      return undefined;
    });
  const localImage = async (ref: TagRef): Promise<TagResolution | undefined> => {
    const img = await source.resolveTag(ref.registry, ref.repository, ref.tag).catch(() => undefined);
    return img === undefined ? undefined : { ...resolutionOf(ref, img), resolvedAt: 0, source: 'local' };
  };
  const record = async (r: TagResolution, log: TagLog, what: string) => {
    try {
      await opts.lastKnown?.record(r);
    } catch (err) {
      log.warn(
        { err, registry: r.registry, repository: r.repository, tag: r.tag },
        `could not record ${what}`,
      );
    }
  };

  /** Newest of: our record, our local image (resolvedAt unknown = 0), peers' answers. */
  const lastKnownOf = async (
    ref: TagRef,
    signal: AbortSignal,
    log: TagLog,
  ): Promise<{ best: TagResolution; holders: Peer[] } | undefined> => {
    const [rec, img, answers] = await Promise.all([
      readRecord(ref, log),
      localImage(ref),
      deps.askPeers(
        {
          ...ref,
          key: tagKey(ref.registry, ref.repository, ref.tag),
          timeoutMs: opts.peerAnswerTimeoutMs ?? 1000,
          graceMs: opts.peerAnswerGraceMs ?? 2000,
          maxPeers: Math.max(1, opts.maxPeerAnswers ?? 3),
        },
        signal,
      ),
    ]);
    const candidates: TagResolution[] = [];
    if (rec !== undefined) candidates.push({ ...rec, source: 'last-known' });
    if (img !== undefined) candidates.push(img);
    // A record this node got from the upstream itself is never replaced by a peer's word.
    const trusted = rec?.source === 'upstream' ? [] : answers.filter(plausible);
    for (const a of trusted) candidates.push({ ...ref, ...answerFields(a), source: 'peer' });
    let best: TagResolution | undefined;
    for (const c of candidates) if (best === undefined || c.resolvedAt > best.resolvedAt) best = c;
    if (best === undefined) return undefined;
    const digest = best.digest;
    const holders = trusted.filter((a) => a.digest === digest).map((a) => a.peer);
    // Survive a restart during the outage; the resolution keeps its original time.
    if (best.source === 'peer' && (rec === undefined || best.resolvedAt > rec.resolvedAt))
      await record(best, log, 'the peer answer');
    return { best, holders };
  };

  return {
    modeFor: (ref) => opts.modeFor(ref.registry, ref.repository, ref.tag),

    async ownAnswer(ref, log) {
      // Only what this node knows itself: a record learned from a peer is not passed on as evidence.
      const candidates = [await readRecord(ref, log), await localImage(ref)].filter(
        (c): c is TagResolution => c !== undefined && c.source !== 'peer',
      );
      candidates.sort((a, b) => b.resolvedAt - a.resolvedAt);
      for (const c of candidates) {
        // The local image is held (resolveTag answers only what is there); a record may name gone content.
        if (c.source === 'local') return c;
        if ((await source.stat(c.digest).catch(() => undefined)) !== undefined) return c;
      }
      return undefined;
    },

    async verify(ref, signal, log) {
      const event: TagEvent = { mode: 'verify', outcome: 'miss' };
      const upstream = opts.upstream;
      if (upstream === undefined) {
        event.outcome = 'deferred';
        return { ok: false, reason: 'no upstream client configured for verify', event };
      }
      const t0 = performance.now();
      const outcome = await askUpstream(upstream, ref, signal, upstreamTimeoutMs);
      event.upstreamMs = performance.now() - t0;
      event.upstream = outcome.kind;
      switch (outcome.kind) {
        case 'resolved': {
          const { kind: _, ...found } = outcome;
          const resolution: TagResolution = { ...ref, ...found, resolvedAt: now(), source: 'upstream' };
          await record(resolution, log, 'the resolution');
          event.outcome = 'upstream';
          event.digest = resolution.digest;
          event.source = 'upstream';
          return { ok: true, resolution, event, holders: [] };
        }
        case 'unauthorized':
          event.outcome = 'deferred';
          return {
            ok: false,
            event,
            reason: upstream.hasCredentials(ref.registry)
              ? `the upstream refused the configured credentials (${outcome.status}); containerd resolves it`
              : `the upstream wants credentials (${outcome.status}) and none are configured; containerd resolves it with its own`,
          };
        case 'not-found':
          return { ok: false, reason: 'the upstream does not know this tag', event };
      }
      if (signal.aborted) return { ok: false, reason: 'client went away', event };
      // The upstream cannot answer: the newest digest the cluster resolved.
      const known = await lastKnownOf(ref, signal, log);
      if (known === undefined)
        return { ok: false, reason: 'upstream unavailable and no last-known digest in the cluster', event };
      const { best, holders } = known;
      event.outcome = 'last-known';
      event.digest = best.digest;
      event.source = best.source;
      if (best.resolvedAt > 0) event.lastKnownAgeMs = Math.max(0, now() - best.resolvedAt);
      return { ok: true, resolution: best, event, holders };
    },
  };
}

function answerFields(a: PeerTagAnswer): Pick<TagResolution, 'digest' | 'resolvedAt' | 'mediaType' | 'size'> {
  return {
    digest: a.digest,
    resolvedAt: a.resolvedAt,
    ...(a.mediaType === undefined ? {} : { mediaType: a.mediaType }),
    ...(a.size === undefined ? {} : { size: a.size }),
  };
}

function resolutionOf(ref: TagRef, info: ContentInfo): Omit<TagResolution, 'resolvedAt' | 'source'> {
  return {
    ...ref,
    digest: info.digest,
    size: info.size,
    ...(info.mediaType === undefined ? {} : { mediaType: info.mediaType }),
  };
}

/** Asks the upstream with a deadline; every failure (and the deadline) is 'unavailable'. */
async function askUpstream(
  upstream: TagUpstream,
  ref: TagRef,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<UpstreamOutcome> {
  const deadline = AbortSignal.timeout(timeoutMs);
  const both = AbortSignal.any([signal, deadline]);
  const expired = new Promise<UpstreamOutcome>((resolve) =>
    both.addEventListener('abort', () => resolve({ kind: 'unavailable', reason: 'no answer in time' }), {
      once: true,
    }),
  );
  return Promise.race([
    upstream
      .resolveTag(ref.registry, ref.repository, ref.tag, { signal: both })
      .catch((): UpstreamOutcome => ({ kind: 'unavailable', reason: 'the request failed' })),
    expired,
  ]);
}
