/** The pinner's Prometheus metrics (`ferry_pinner_*`). */
import { Counter, Histogram, Registry } from 'prom-client';

/** Where an image's digest came from (the `source` label). */
export type PinSource = 'upstream' | 'last-known' | 'cluster';

/** Bounded set of error reasons (the `reason` label). */
export type PinnerErrorReason =
  | 'bad-request'
  | 'wrong-kind'
  | 'invalid-reference'
  | 'upstream-unavailable'
  | 'upstream-unauthorized'
  | 'upstream-not-found'
  | 'record-failed'
  | 'store-failed'
  | 'cluster-failed'
  | 'cluster-implausible'
  | 'too-large'
  | 'internal';

/** The pinner's metrics. */
export interface PinnerMetrics {
  readonly registry: Registry;
  /** ferry_pinner_resolutions_total{source}: images resolved per admission, by source (or `unresolved`). */
  readonly resolutions: Counter<'source'>;
  /** ferry_pinner_admission_duration_seconds: time to answer one AdmissionReview. */
  readonly admissionDuration: Histogram<string>;
  /** ferry_pinner_errors_total{reason}. */
  readonly errors: Counter<'reason'>;
}

/**
 * Registers the pinner's metrics in `registry` (default: a fresh one). A registry holds them once: give
 * each pinner its own registry, or share the agent's with a single pinner.
 */
export function createPinnerMetrics(registry: Registry = new Registry()): PinnerMetrics {
  const registers = [registry];
  const m: PinnerMetrics = {
    registry,
    resolutions: new Counter({
      name: 'ferry_pinner_resolutions_total',
      help: 'Images the pinner resolved, by source: upstream, last-known (the database, while the upstream is down), cluster (the local agent and its peers), unresolved (admitted unpinned).',
      labelNames: ['source'],
      registers,
    }),
    admissionDuration: new Histogram({
      name: 'ferry_pinner_admission_duration_seconds',
      help: 'Time to answer one AdmissionReview.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers,
    }),
    errors: new Counter({
      name: 'ferry_pinner_errors_total',
      help: 'Pinner problems by reason: bad-request, wrong-kind, invalid-reference, upstream-unavailable, upstream-unauthorized, upstream-not-found, record-failed, store-failed, cluster-failed, cluster-implausible, too-large, internal.',
      labelNames: ['reason'],
      registers,
    }),
  };
  // Series exist from the start, so dashboards see zeroes before the first admission.
  for (const source of ['upstream', 'last-known', 'cluster', 'unresolved']) m.resolutions.inc({ source }, 0);
  return m;
}
