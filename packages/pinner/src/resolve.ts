/**
 * Tag → digest for the pinner, within a deadline: 1. the upstream (a fresh-enough earlier upstream answer
 * is reused), 2. the last-known database, 3. the cluster (HEAD on the local agent's registry, which
 * resolves through its peers). Upstream and cluster answers are recorded (sync write) before they are
 * returned, unless the request is a dry run.
 */
import { abortable, firstHeader, isDigest, manifestAcceptTypes } from '@ferry/oci';
import {
  type LastKnownStore,
  MAX_PEER_CLOCK_SKEW_MS,
  type Resolution,
  type UpstreamClient,
  type UpstreamOutcome,
} from '@ferry/resolver';
import { Agent, type Dispatcher, request } from 'undici';
import type { PinnerErrorReason, PinSource } from './metrics.ts';

/** The header a Ferry registry may add to a tag answer: when its digest was resolved (ms epoch). */
const RESOLVED_AT_HEADER = 'x-ferry-resolved-at';
const ACCEPT = manifestAcceptTypes.join(', ');

/** A tag to resolve (normalised). */
export interface TagRef {
  registry: string;
  repository: string;
  tag: string;
}

/** The answer for one tag. */
export type TagAnswer =
  | { kind: 'pinned'; digest: string; source: PinSource; resolvedAt: number }
  | { kind: 'unresolved'; reason: string };

/** Options of createTagResolver. */
export interface TagResolverOptions {
  /** The upstream client (@ferry/resolver). */
  upstream: Pick<UpstreamClient, 'resolveTag'>;
  /** The last-known database. */
  store: LastKnownStore;
  /** Base URL of the local agent's registry (e.g. http://127.0.0.1:5000); undefined: no cluster step. */
  clusterUrl?: string | undefined;
  /** Longest wait for the upstream in one resolution (also bounded by the admission's deadline). Default 1000 ms. */
  upstreamTimeoutMs?: number;
  /** An upstream answer younger than this is reused without asking again. 0 disables. Default 10000 ms. */
  freshForMs?: number;
  /** Most tags kept in the freshness cache. Default 10000. */
  cacheSize?: number;
  /** Called for each problem (metrics). */
  onError?: (reason: PinnerErrorReason, detail: Record<string, unknown>) => void;
  /** undici dispatcher for the cluster step (tests). Default: an own keep-alive Agent. */
  dispatcher?: Dispatcher;
  /** Clock (ms epoch). Default Date.now. */
  now?: () => number;
}

/** Per-call options. */
export interface ResolveOptions {
  /** Aborts at the admission's deadline. */
  signal: AbortSignal;
  /** A dry run writes nothing (no record, no cache entry). */
  dryRun?: boolean;
}

export interface TagResolver {
  resolve(ref: TagRef, opts: ResolveOptions): Promise<TagAnswer>;
  close(): Promise<void>;
}

interface Fresh {
  digest: string;
  resolvedAt: number;
}

type UpstreamStep = { outcome: UpstreamOutcome; resolvedAt: number };

function keyOf(r: TagRef): string {
  return `${r.registry}/${r.repository}:${r.tag}`;
}

/** Resolves with `p`, or with `onAbort()` as soon as `signal` aborts. */
function race<T>(p: Promise<T>, signal: AbortSignal, onAbort: () => T): Promise<T> {
  return abortable(p, signal).catch((err) => {
    if (signal.aborted) return onAbort();
    throw err;
  });
}

/** Creates the pinner's tag resolver. */
export function createTagResolver(opts: TagResolverOptions): TagResolver {
  const now = opts.now ?? Date.now;
  const upstreamTimeoutMs = opts.upstreamTimeoutMs ?? 1000;
  const freshForMs = opts.freshForMs ?? 10_000;
  const cacheSize = Math.max(1, opts.cacheSize ?? 10_000);
  const onError = opts.onError ?? (() => {});
  const clusterUrl = opts.clusterUrl?.replace(/\/+$/, '') || undefined;
  const ownDispatcher = opts.dispatcher === undefined && clusterUrl !== undefined;
  const dispatcher: Dispatcher | undefined =
    opts.dispatcher ?? (clusterUrl ? new Agent({ keepAliveTimeout: 30_000, connections: 8 }) : undefined);

  /** tag key → the last upstream answer that was recorded. */
  const fresh = new Map<string, Fresh>();
  /** In-flight upstream steps (one per tag and dry-run flag), shared by concurrent admissions. */
  const inflight = new Map<string, Promise<UpstreamStep>>();

  const remember = (key: string, f: Fresh) => {
    fresh.delete(key);
    fresh.set(key, f);
    if (fresh.size > cacheSize) fresh.delete(fresh.keys().next().value as string);
  };

  async function record(r: Resolution, dryRun: boolean): Promise<boolean> {
    if (dryRun) return false;
    try {
      await opts.store.record(r);
      return true;
    } catch (err) {
      onError('record-failed', { key: keyOf(r), err: (err as Error).message });
      return false;
    }
  }

  /** Asks the upstream and records a resolved answer (the leader of concurrent callers does this once). */
  function upstreamStep(
    ref: TagRef,
    key: string,
    signal: AbortSignal,
    dryRun: boolean,
  ): Promise<UpstreamStep> {
    const flightKey = `${dryRun ? 'dry' : 'wet'} ${key}`;
    let p = inflight.get(flightKey);
    if (p === undefined) {
      p = (async (): Promise<UpstreamStep> => {
        const own = AbortSignal.any([signal, AbortSignal.timeout(upstreamTimeoutMs)]);
        let outcome: UpstreamOutcome;
        try {
          outcome = await opts.upstream.resolveTag(ref.registry, ref.repository, ref.tag, { signal: own });
        } catch (err) {
          outcome = { kind: 'unavailable', reason: (err as Error).message };
        }
        const resolvedAt = now();
        if (outcome.kind === 'resolved') {
          const r: Resolution = {
            ...ref,
            digest: outcome.digest,
            ...(outcome.mediaType === undefined ? {} : { mediaType: outcome.mediaType }),
            ...(outcome.size === undefined ? {} : { size: outcome.size }),
            resolvedAt,
            source: 'upstream',
          };
          if (await record(r, dryRun)) remember(key, { digest: outcome.digest, resolvedAt });
        }
        return { outcome, resolvedAt };
      })().finally(() => inflight.delete(flightKey));
      inflight.set(flightKey, p);
    }
    return race(p, signal, () => ({
      outcome: { kind: 'unavailable', reason: 'admission deadline reached' },
      resolvedAt: now(),
    }));
  }

  async function clusterStep(
    ref: TagRef,
    signal: AbortSignal,
  ): Promise<{ digest: string; resolvedAt: number } | string> {
    if (clusterUrl === undefined) return 'no cluster registry configured';
    if (signal.aborted) return 'admission deadline reached';
    const url = `${clusterUrl}/v2/${ref.repository}/manifests/${encodeURIComponent(ref.tag)}?ns=${encodeURIComponent(ref.registry)}`;
    try {
      const res = await request(url, {
        method: 'HEAD',
        headers: { accept: ACCEPT, 'user-agent': 'ferry-pinner' },
        signal,
        ...(dispatcher ? { dispatcher } : {}),
      });
      res.body.on('error', () => {});
      await res.body.dump().catch(() => {});
      if (res.statusCode !== 200) return `the cluster does not know it (HTTP ${res.statusCode})`;
      const digest = firstHeader(res.headers['docker-content-digest']);
      if (digest === undefined || !isDigest(digest)) return 'the cluster answered without a digest';
      const at = Number(firstHeader(res.headers[RESOLVED_AT_HEADER]) ?? '0');
      return { digest, resolvedAt: Number.isSafeInteger(at) && at > 0 ? at : 0 };
    } catch (err) {
      if (signal.aborted) return 'admission deadline reached';
      onError('cluster-failed', { key: keyOf(ref), err: (err as Error).message });
      return `cluster registry unreachable (${(err as Error).message})`;
    }
  }

  return {
    async resolve(ref, { signal, dryRun = false }) {
      const key = keyOf(ref);
      // 1. The upstream (or its answer of a moment ago).
      const cached = fresh.get(key);
      if (cached !== undefined && freshForMs > 0 && now() - cached.resolvedAt < freshForMs) {
        return { kind: 'pinned', digest: cached.digest, source: 'upstream', resolvedAt: cached.resolvedAt };
      }
      const up = await upstreamStep(ref, key, signal, dryRun);
      const o = up.outcome;
      if (o.kind === 'resolved') {
        return { kind: 'pinned', digest: o.digest, source: 'upstream', resolvedAt: up.resolvedAt };
      }
      if (o.kind === 'not-found') {
        onError('upstream-not-found', { key });
        // The upstream says the tag does not exist: pinning an old digest would hide that.
        return { kind: 'unresolved', reason: 'the upstream does not know this tag' };
      }
      const why =
        o.kind === 'unauthorized' ? `upstream refused (${o.status})` : `upstream unavailable (${o.reason})`;
      onError(o.kind === 'unauthorized' ? 'upstream-unauthorized' : 'upstream-unavailable', { key, why });

      // 2. The last-known database.
      try {
        const known = await race(
          opts.store.get(ref.registry, ref.repository, ref.tag),
          signal,
          () => undefined,
        );
        if (known !== undefined) {
          return { kind: 'pinned', digest: known.digest, source: 'last-known', resolvedAt: known.resolvedAt };
        }
      } catch (err) {
        onError('store-failed', { key, err: (err as Error).message });
      }

      // 3. The cluster: the local agent's registry, which asks its peers.
      const c = await clusterStep(ref, signal);
      if (typeof c === 'string') return { kind: 'unresolved', reason: `${why}; no last-known digest; ${c}` };
      // A peer-learned answer is evidence: pinned under the store's rules (no time in the future).
      if (c.resolvedAt > now() + MAX_PEER_CLOCK_SKEW_MS) {
        onError('cluster-implausible', { key });
        return {
          kind: 'unresolved',
          reason: `${why}; no last-known digest; the cluster's answer claims a resolution time in the future`,
        };
      }
      await record(
        { ...ref, digest: c.digest, resolvedAt: c.resolvedAt, source: 'peer', peer: 'cluster' },
        dryRun,
      );
      return { kind: 'pinned', digest: c.digest, source: 'cluster', resolvedAt: c.resolvedAt };
    },
    async close() {
      fresh.clear();
      if (ownDispatcher) await dispatcher?.close().catch(() => {});
    },
  };
}
