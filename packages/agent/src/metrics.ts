/**
 * Ferry's Prometheus metrics (all `ferry_`-prefixed, plus the default process/nodejs metrics) and the
 * mapping from the registry plugin's request events to them.
 */

import type { P2PStats } from '@ferry/p2p';
import type { RegistryRequestEvent, RequestOutcome } from '@ferry/registry';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { TrackerCounts } from './tracker.ts';

/** One request seen by the registry plugin (its observer's onRequest event). */
export type RequestEvent = RegistryRequestEvent;
export type { RequestOutcome };

/** A failed attempt to fetch from one peer. */
export interface PeerFailureEvent {
  peer: string;
  key: string;
  /** Short cause: 'timeout', 'status', 'connect', 'aborted', 'digest', 'quarantined'… (bounded set; used as a label). */
  reason: string;
}

/** Ferry's metrics, in their own registry. */
export interface FerryMetrics {
  readonly registry: Registry;
  /** ferry_mirror_requests_total{registry,kind,outcome}: requests from the local containerd. */
  readonly mirrorRequests: Counter<'registry' | 'kind' | 'outcome'>;
  /** ferry_peer_requests_total{kind,outcome}: requests from peers (served from local content only). */
  readonly peerRequests: Counter<'kind' | 'outcome'>;
  /** ferry_request_duration_seconds{kind,outcome}. */
  readonly requestDuration: Histogram<'kind' | 'outcome'>;
  /** ferry_resolve_duration_seconds: router lookup to first peer. */
  readonly resolveDuration: Histogram<string>;
  /** ferry_advertised_keys{kind=digest|tag}. */
  readonly advertisedKeys: Gauge<'kind'>;
  /** ferry_data_dir_writable: 1 while --data-dir takes writes, 0 once it did not (full, read-only, I/O errors). */
  readonly dataDirWritable: Gauge<string>;
  /** ferry_tracked_images: images the tracker knows. */
  readonly trackedImages: Gauge<string>;
  /** ferry_peer_served_bytes_total: bytes served to peers. */
  readonly peerServedBytes: Counter<string>;
  /** ferry_peer_fetched_bytes_total: bytes fetched from peers (for the local containerd). */
  readonly peerFetchedBytes: Counter<string>;
  /** ferry_peer_fetch_attempts_total: fetches started from peers (hedges included). */
  readonly peerFetchAttempts: Counter<string>;
  /** ferry_peer_fetch_failures_total{reason}: attempts of requests no peer could serve ('miss'), or reported failures. */
  readonly peerFetchFailures: Counter<'reason'>;
  /** ferry_mirror_last_success_timestamp_seconds: last request served from a peer. */
  readonly lastMirrorSuccess: Gauge<string>;
  /** ferry_containerd_resyncs_total{reason}: full re-lists of images and content. */
  readonly containerdResyncs: Counter<'reason'>;
  /** ferry_containerd_reconnects_total: event stream reconnects. */
  readonly containerdReconnects: Counter<string>;
  /** ferry_tag_resolutions_total{mode,outcome}: tag requests of the local containerd by tag mode and outcome. */
  readonly tagResolutions: Counter<'mode' | 'outcome'>;
  /** ferry_upstream_request_duration_seconds{result}: the upstream naming a tag's digest (mode verify). */
  readonly upstreamDuration: Histogram<'result'>;
  /** ferry_last_known_age_seconds: age of last-known digests served while the upstream was unavailable. */
  readonly lastKnownAge: Histogram<string>;
  /** ferry_upstream_fetched_bytes_total: blob and manifest bytes the agent fetched from upstream registries (pull-through). */
  readonly upstreamFetchedBytes: Counter<string>;
  /** ferry_inflight_shared_bytes_total: bytes of transfers still in flight served to peers from the spool. */
  readonly inflightSharedBytes: Counter<string>;
  /** ferry_transfer_followers: peers that streamed one transfer from this node while it was in flight. */
  readonly transferFollowers: Histogram<string>;
  /** ferry_transfer_takeovers_total: a lost source (fetcher or upstream connection) replaced by an upstream Range fetch. */
  readonly transferTakeovers: Counter<string>;
  /** ferry_transfers_total{result}: pull-through transfers ended (complete, failed). */
  readonly transfers: Counter<'result'>;
}

/** Options of createMetrics. */
export interface MetricsOptions {
  /** Also collect prom-client's default process and Node.js metrics. Default true. */
  defaultMetrics?: boolean;
  /** At most this many distinct `registry` label values; later ones are counted as 'other'. Default 50. */
  maxRegistries?: number;
}

/** Creates Ferry's metrics in a fresh registry. */
export function createMetrics(opts: MetricsOptions = {}): FerryMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const m: FerryMetrics = {
    registry,
    mirrorRequests: new Counter({
      name: 'ferry_mirror_requests_total',
      help: 'Requests from the local containerd, by upstream registry, kind and outcome (local, peer, miss, filtered, invalid).',
      labelNames: ['registry', 'kind', 'outcome'],
      registers,
    }),
    peerRequests: new Counter({
      name: 'ferry_peer_requests_total',
      help: 'Requests from peers, by kind and outcome.',
      labelNames: ['kind', 'outcome'],
      registers,
    }),
    requestDuration: new Histogram({
      name: 'ferry_request_duration_seconds',
      help: 'Time to answer a registry request.',
      labelNames: ['kind', 'outcome'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    resolveDuration: new Histogram({
      name: 'ferry_resolve_duration_seconds',
      help: 'Router lookup until the first peer was found.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 3],
      registers,
    }),
    advertisedKeys: new Gauge({
      name: 'ferry_advertised_keys',
      help: 'Keys this node advertises, by kind (digest, tag).',
      labelNames: ['kind'],
      registers,
    }),
    trackedImages: new Gauge({ name: 'ferry_tracked_images', help: 'Images seen in containerd.', registers }),
    dataDirWritable: new Gauge({
      name: 'ferry_data_dir_writable',
      help: '1 while --data-dir takes writes; 0 once it did not (full, read-only, I/O errors): state is kept in memory.',
      registers,
    }),
    peerServedBytes: new Counter({
      name: 'ferry_peer_served_bytes_total',
      help: 'Bytes served to peers.',
      registers,
    }),
    peerFetchedBytes: new Counter({
      name: 'ferry_peer_fetched_bytes_total',
      help: 'Bytes fetched from peers for the local containerd.',
      registers,
    }),
    peerFetchAttempts: new Counter({
      name: 'ferry_peer_fetch_attempts_total',
      help: 'Fetches started from peers for the local containerd (hedged fetches included).',
      registers,
    }),
    peerFetchFailures: new Counter({
      name: 'ferry_peer_fetch_failures_total',
      help: 'Failed fetch attempts from a peer, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    lastMirrorSuccess: new Gauge({
      name: 'ferry_mirror_last_success_timestamp_seconds',
      help: 'Unix time of the last request served from a peer.',
      registers,
    }),
    containerdResyncs: new Counter({
      name: 'ferry_containerd_resyncs_total',
      help: 'Full re-lists of containerd images and content, by reason (start, reconnect, timer, event).',
      labelNames: ['reason'],
      registers,
    }),
    containerdReconnects: new Counter({
      name: 'ferry_containerd_reconnects_total',
      help: 'Reconnects of the containerd event stream.',
      registers,
    }),
    tagResolutions: new Counter({
      name: 'ferry_tag_resolutions_total',
      help: 'Tag requests of the local containerd by mode (cluster, upstream, verify) and outcome (upstream, last-known, cluster, deferred, miss).',
      labelNames: ['mode', 'outcome'],
      registers,
    }),
    upstreamDuration: new Histogram({
      name: 'ferry_upstream_request_duration_seconds',
      help: 'Time for the upstream registry to name a tag digest (mode verify), by result (resolved, unavailable, unauthorized, not-found).',
      labelNames: ['result'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    lastKnownAge: new Histogram({
      name: 'ferry_last_known_age_seconds',
      help: 'Age of the last-known digests served while the upstream was unavailable (when their resolution time is known).',
      buckets: [60, 600, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400],
      registers,
    }),
    upstreamFetchedBytes: new Counter({
      name: 'ferry_upstream_fetched_bytes_total',
      help: 'Blob and manifest bytes this agent fetched from upstream registries (first-pull sharing).',
      registers,
    }),
    inflightSharedBytes: new Counter({
      name: 'ferry_inflight_shared_bytes_total',
      help: 'Bytes of transfers still in flight (spool) served to peers.',
      registers,
    }),
    transferFollowers: new Histogram({
      name: 'ferry_transfer_followers',
      help: 'Peers that streamed one pull-through transfer from this node while it was in flight.',
      buckets: [0, 1, 2, 4, 8, 16, 32, 64],
      registers,
    }),
    transferTakeovers: new Counter({
      name: 'ferry_transfer_takeovers_total',
      help: 'Transfers whose source (the fetching peer or the upstream connection) was lost and that went on with an upstream Range fetch.',
      registers,
    }),
    transfers: new Counter({
      name: 'ferry_transfers_total',
      help: 'Pull-through transfers ended, by result (complete, failed).',
      labelNames: ['result'],
      registers,
    }),
  };
  // Label values with zero counts, so dashboards see the series before the first request.
  for (const kind of ['digest', 'tag']) m.advertisedKeys.set({ kind }, 0);
  return m;
}

/** The registry plugin's observer, feeding Ferry's metrics. */
export interface RequestObserver {
  onRequest(e: RequestEvent): void;
  onPeerFailure(e: PeerFailureEvent): void;
}

const OUTCOMES = new Set<RequestOutcome>(['local', 'peer', 'pull-through', 'miss', 'filtered', 'invalid']);
const TAG_MODES = new Set<string>(['cluster', 'upstream', 'verify']);
const TAG_OUTCOMES = new Set<string>(['upstream', 'last-known', 'cluster', 'deferred', 'miss']);
const UPSTREAM_RESULTS = new Set<string>(['resolved', 'unavailable', 'unauthorized', 'not-found']);

/**
 * Creates the observer that maps registry events to metrics. The `registry` label is bounded
 * (invalid requests count as 'invalid', registries past `maxRegistries` as 'other'): ?ns= is client input.
 */
export function createRequestObserver(metrics: FerryMetrics, opts: MetricsOptions = {}): RequestObserver {
  const max = opts.maxRegistries ?? 50;
  const seen = new Set<string>();
  const registryLabel = (e: RequestEvent): string => {
    if (e.outcome === 'invalid' || e.registry === undefined) return 'invalid';
    if (seen.has(e.registry)) return e.registry;
    if (seen.size >= max) return 'other';
    seen.add(e.registry);
    return e.registry;
  };
  const failureReasons = new Set<string>();
  const fail = (reason: string, n = 1) => {
    if (!failureReasons.has(reason)) {
      if (failureReasons.size >= 20) reason = 'other';
      else failureReasons.add(reason);
    }
    metrics.peerFetchFailures.inc({ reason }, n);
  };
  return {
    onRequest(e) {
      const outcome = OUTCOMES.has(e.outcome) ? e.outcome : 'invalid';
      const kind = e.kind === 'manifests' || e.kind === 'blobs' ? e.kind : 'invalid';
      metrics.requestDuration.observe({ kind, outcome }, Math.max(0, e.durationMs) / 1000);
      if (e.mirrored) {
        metrics.peerRequests.inc({ kind, outcome });
        if (outcome === 'local' && e.bytes > 0) metrics.peerServedBytes.inc(e.bytes);
        return;
      }
      metrics.mirrorRequests.inc({ registry: registryLabel(e), kind, outcome });
      if (e.tag !== undefined) {
        const mode = TAG_MODES.has(e.tag.mode) ? e.tag.mode : 'other';
        const tagOutcome = TAG_OUTCOMES.has(e.tag.outcome) ? e.tag.outcome : 'other';
        metrics.tagResolutions.inc({ mode, outcome: tagOutcome });
        if (e.tag.upstreamMs !== undefined)
          metrics.upstreamDuration.observe(
            { result: UPSTREAM_RESULTS.has(e.tag.upstream ?? '') ? (e.tag.upstream as string) : 'other' },
            Math.max(0, e.tag.upstreamMs) / 1000,
          );
        if (e.tag.lastKnownAgeMs !== undefined)
          metrics.lastKnownAge.observe(Math.max(0, e.tag.lastKnownAgeMs) / 1000);
      }
      if (e.resolveMs !== undefined) metrics.resolveDuration.observe(Math.max(0, e.resolveMs) / 1000);
      const attempts = e.attempts ?? 0;
      if (attempts > 0) metrics.peerFetchAttempts.inc(attempts);
      if (outcome === 'peer') {
        if (e.bytes > 0) metrics.peerFetchedBytes.inc(e.bytes);
        if (!e.aborted) metrics.lastMirrorSuccess.set(Date.now() / 1000);
      } else if (outcome === 'miss' && attempts > 0) {
        fail('miss', attempts);
      }
    },
    onPeerFailure(e) {
      fail(e.reason);
    },
  };
}

/** Sets the advertised-keys gauges from the tracker's counts. */
export function recordTrackerCounts(metrics: FerryMetrics, counts: TrackerCounts): void {
  metrics.advertisedKeys.set({ kind: 'digest' }, counts.digests);
  metrics.advertisedKeys.set({ kind: 'tag' }, counts.tags);
  metrics.trackedImages.set(counts.images);
}

/**
 * The peer network's own figures (`P2PNode.stats()`), read at each scrape: the mesh (members,
 * connections, whether the view is settled), the provider store, how lookups were answered, and the
 * failure detector (pings, peers found unresponsive, probes this node's own stalls spoilt,
 * suspicions, introductions). Counters mirror the node's totals since start.
 */
export function registerP2PMetrics(metrics: FerryMetrics, stats: () => P2PStats): void {
  const registers = [metrics.registry];
  const gauge = (name: string, help: string, value: (s: P2PStats) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value(stats()));
      },
    });
  /** A counter that follows a total the node keeps, per label value. */
  const total = <L extends string>(
    name: string,
    help: string,
    label: L,
    values: (s: P2PStats) => Record<string, number>,
  ) => {
    const last = new Map<string, number>();
    return new Counter<L>({
      name,
      help,
      labelNames: [label],
      registers,
      collect() {
        for (const [value, n] of Object.entries(values(stats()))) {
          const delta = n - (last.get(value) ?? 0);
          if (delta > 0) this.inc({ [label]: value } as Record<L, string>, delta);
          else if (!last.has(value)) this.inc({ [label]: value } as Record<L, string>, 0);
          last.set(value, n);
        }
      },
    });
  };
  gauge('ferry_p2p_members', 'DHT members connected.', (s) => s.members);
  gauge('ferry_p2p_connections', 'Open peer connections.', (s) => s.connections);
  gauge(
    'ferry_p2p_view_settled',
    '1 while the node takes its provider store for the whole cluster (full mesh, no member joining).',
    (s) => (s.settled ? 1 : 0),
  );
  gauge(
    'ferry_p2p_provider_records',
    'Provider records held (key x provider), its own included.',
    (s) => s.records,
  );
  total(
    'ferry_p2p_lookups_total',
    'Lookups by how they were answered: from the local store (view settled), by asking members, or from the local store because the bound on rounds asking members was reached (shed).',
    'answer',
    (s) => ({ local: s.lookups.local - s.lookups.shed, asked: s.lookups.network, shed: s.lookups.shed }),
  );
  total(
    'ferry_p2p_liveness_total',
    "The failure detector: pings sent, peers found unresponsive by this node's own ping, deadlines waited again because this node's own event loop let them pass (stalled), duplicate connections closed.",
    'event',
    (s) => ({
      ping: s.liveness.pings,
      unresponsive: s.liveness.unresponsive,
      stalled: s.liveness.stalledProbes,
      duplicate_closed: s.liveness.duplicatesClosed,
    }),
  );
  total(
    'ferry_p2p_suspicions_total',
    "Suspicions of a dead peer: told to members, received, confirmed by this node's own ping, cleared (the peer answered), ignored (bounds, not from a member).",
    'event',
    (s) => ({ ...s.liveness.suspicions }),
  );
  total(
    'ferry_p2p_introductions_total',
    'Newcomers introduced: introductions sent (one per member told), received, ignored (not from a member).',
    'event',
    (s) => ({ ...s.introductions }),
  );
}
