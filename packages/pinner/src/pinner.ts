/**
 * The admission logic: an AdmissionReview v1 for a Pod in, an AdmissionReview out with a JSONPatch that
 * pins every in-scope image by tag to `repo:tag@digest`, plus the `ferry.dev/pinned` annotation.
 * Never denies: whatever goes wrong, the pod is allowed (unchanged, with a warning).
 */
import type { LastKnownStore, UpstreamClient } from '@ferry/resolver';
import type { Registry } from 'prom-client';
import type { Dispatcher } from 'undici';
import {
  changedImageSites,
  collectImageSites,
  type ImageSite,
  type PinnableRef,
  pinnableRef,
  pinnedImage,
} from './images.ts';
import {
  createPinnerMetrics,
  type PinnerErrorReason,
  type PinnerMetrics,
  type PinSource,
} from './metrics.ts';
import { buildPatch } from './patch.ts';
import { createTagResolver, type TagAnswer } from './resolve.ts';
import { createScope, PINNED_ANNOTATION } from './scope.ts';

/** A pino-like logger (tests pass nothing). */
export interface PinnerLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/** Options of createPinner. */
export interface PinnerOptions {
  /** Upstream tag resolution (@ferry/resolver's createUpstreamClient). */
  upstream: Pick<UpstreamClient, 'resolveTag'>;
  /** The last-known database (@ferry/resolver's openLastKnownStore under --data-dir). */
  store: LastKnownStore;
  /** Base URL of the local agent's registry, asked when the upstream and the database cannot answer
   *  (`HEAD /v2/<repo>/manifests/<tag>?ns=<registry>`). Default http://127.0.0.1:5000; '' disables. */
  clusterUrl?: string;
  /** Total time to resolve one pod's images (keep it below the webhook's timeoutSeconds). Default 2000 ms. */
  budgetMs?: number;
  /** Longest wait for the upstream per image (also bounded by the budget). Default 1000 ms. */
  upstreamTimeoutMs?: number;
  /** An upstream answer younger than this is reused without asking the upstream again. 0 disables. Default 10000 ms. */
  freshForMs?: number;
  /** Regexes over `<registry>/<repo>:<tag>`: only matching references are pinned. Default: all. */
  include?: readonly string[];
  /** Regexes over `<registry>/<repo>:<tag>`: never pinned (wins over include). */
  exclude?: readonly string[];
  /** Ferry's own namespace, never pinned. Default: the POD_NAMESPACE environment variable. */
  namespace?: string;
  /** Where the metrics are registered. Default: a fresh registry (see `metrics.registry`). */
  metricsRegistry?: Registry;
  /** How many recent resolutions `recent()` keeps. Default 100. */
  recentLimit?: number;
  logger?: PinnerLogger;
  /** undici dispatcher for the cluster step (tests). */
  dispatcher?: Dispatcher;
  /** Clock (ms epoch). Default Date.now. */
  now?: () => number;
}

/** One image the pinner resolved (for status pages). */
export interface PinnedResolution {
  /** The image as written in the pod. */
  image: string;
  registry: string;
  repository: string;
  tag: string;
  digest: string;
  source: PinSource;
  /** When the upstream (originally) answered, ms epoch; 0 when unknown (some cluster answers). */
  resolvedAt: number;
  /** When the pinner answered with it, ms epoch. */
  at: number;
}

/** The HTTP answer to one review: status and JSON body. */
export interface ReviewResult {
  status: number;
  body: unknown;
}

/** The pinner's logic, independent of HTTP. */
export interface Pinner {
  /** Answers one AdmissionReview (the parsed JSON body). Never throws. */
  review(body: unknown): Promise<ReviewResult>;
  /** The last `limit` resolutions, newest first (default 20). */
  recent(limit?: number): PinnedResolution[];
  readonly metrics: PinnerMetrics;
  /** Releases the cluster connection pool (not the upstream client nor the store: the caller owns them). */
  close(): Promise<void>;
}

/** The annotation value: what was pinned, to which digest, from where. */
export type PinnedAnnotation = Record<string, { digest: string; source: PinSource }>;

const ADMISSION_VERSIONS = new Set(['admission.k8s.io/v1', 'admission.k8s.io/v1beta1']);
/** Time kept back from the budget to build and send the answer. */
const ANSWER_MARGIN_MS = 50;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const noLogger: PinnerLogger = { debug() {}, info() {}, warn() {} };

/** Longest request uid answered (Kubernetes uids are 36 characters). */
const MAX_UID_LENGTH = 128;

/** Creates the pinner. Throws when an include/exclude pattern is not a valid regex. */
export function createPinner(opts: PinnerOptions): Pinner {
  const now = opts.now ?? Date.now;
  const log = opts.logger ?? noLogger;
  const budgetMs = opts.budgetMs ?? 2000;
  const metrics = createPinnerMetrics(opts.metricsRegistry);
  const scope = createScope({
    ...(opts.include ? { include: opts.include } : {}),
    ...(opts.exclude ? { exclude: opts.exclude } : {}),
    namespace: opts.namespace ?? process.env.POD_NAMESPACE ?? '',
  });
  const error = (reason: PinnerErrorReason, detail: Record<string, unknown> = {}) => {
    metrics.errors.inc({ reason });
    log.debug({ reason, ...detail }, 'pinner problem');
  };
  const resolver = createTagResolver({
    upstream: opts.upstream,
    store: opts.store,
    clusterUrl: opts.clusterUrl ?? 'http://127.0.0.1:5000',
    upstreamTimeoutMs: Math.min(opts.upstreamTimeoutMs ?? 1000, budgetMs),
    freshForMs: opts.freshForMs ?? 10_000,
    onError: error,
    ...(opts.dispatcher ? { dispatcher: opts.dispatcher } : {}),
    now,
  });
  const recentLimit = Math.max(1, opts.recentLimit ?? 100);
  const recentList: PinnedResolution[] = [];

  function envelope(apiVersion: string, response: Record<string, unknown>): ReviewResult {
    return { status: 200, body: { apiVersion, kind: 'AdmissionReview', response } };
  }

  function badRequest(message: string): ReviewResult {
    error('bad-request', { message });
    return { status: 400, body: { error: message } };
  }

  async function admit(
    apiVersion: string,
    uid: string,
    request: Record<string, unknown>,
  ): Promise<ReviewResult> {
    const allow = (warnings: string[] = [], message?: string) =>
      envelope(apiVersion, {
        uid,
        allowed: true,
        ...(message ? { status: { code: 200, message } } : {}),
        ...(warnings.length ? { warnings } : {}),
      });

    const kind = isRecord(request.kind) ? request.kind : undefined;
    if (kind?.kind !== 'Pod' || (kind.group ?? '') !== '') {
      error('wrong-kind');
      const msg = 'ferry pinner: expected a Pod; nothing pinned';
      return allow([msg], msg);
    }
    const operation = request.operation;
    if (operation !== 'CREATE' && operation !== 'UPDATE') return allow();
    const pod = request.object;
    if (!isRecord(pod)) {
      error('bad-request', { uid, message: 'request.object is not an object' });
      const msg = 'ferry pinner: request.object is not a Pod object; nothing pinned';
      return allow([msg], msg);
    }
    const metadata = isRecord(pod.metadata) ? pod.metadata : undefined;
    const annotations = metadata && isRecord(metadata.annotations) ? metadata.annotations : undefined;
    const namespace =
      typeof request.namespace === 'string' && request.namespace !== ''
        ? request.namespace
        : typeof metadata?.namespace === 'string'
          ? metadata.namespace
          : undefined;
    const skip = scope.skipPod(namespace, annotations);
    if (skip !== undefined) {
      log.debug({ uid, namespace, skip }, 'pod not pinned');
      return allow();
    }

    const sites: ImageSite[] =
      operation === 'CREATE' ? collectImageSites(pod) : changedImageSites(pod, request.oldObject);
    const warnings: string[] = [];
    const todo = new Map<string, { ref: PinnableRef; sites: ImageSite[] }>();
    for (const site of sites) {
      const p = pinnableRef(site.image);
      if ('reason' in p) {
        if (p.reason === 'invalid') {
          error('invalid-reference', { image: site.image });
          warnings.push(`ferry pinner: ${p.message.slice(0, 200)}; left as is`);
        }
        continue;
      }
      if (!scope.includes(p.key)) continue;
      const entry = todo.get(p.image);
      if (entry) entry.sites.push(site);
      else todo.set(p.image, { ref: p, sites: [site] });
    }
    if (todo.size === 0) return allow(warnings);

    const dryRun = request.dryRun === true;
    const signal = AbortSignal.timeout(Math.max(1, budgetMs - ANSWER_MARGIN_MS));
    // Distinct tags resolve in parallel; the same tag written two ways resolves once (the resolver's
    // freshness cache and in-flight sharing).
    const entries = [...todo.values()];
    const answers = await Promise.all(
      entries.map((e) =>
        resolver.resolve(e.ref.ref, { signal, dryRun }).catch((err: Error): TagAnswer => {
          error('internal', { image: e.ref.image, err: err.message });
          return { kind: 'unresolved', reason: `internal error: ${err.message}` };
        }),
      ),
    );

    const replacements: { path: string[]; value: string }[] = [];
    const pinned: PinnedAnnotation = {};
    const at = now();
    entries.forEach((e, i) => {
      const a = answers[i]!;
      if (a.kind === 'unresolved') {
        metrics.resolutions.inc({ source: 'unresolved' });
        warnings.push(`ferry pinner: could not pin ${e.ref.image}: ${a.reason}; admitted unpinned`);
        return;
      }
      metrics.resolutions.inc({ source: a.source });
      const value = pinnedImage(e.ref.image, a.digest);
      for (const s of e.sites) replacements.push({ path: s.path, value });
      pinned[e.ref.image] = { digest: a.digest, source: a.source };
      recentList.push({
        image: e.ref.image,
        registry: e.ref.ref.registry,
        repository: e.ref.ref.repository,
        tag: e.ref.ref.tag,
        digest: a.digest,
        source: a.source,
        resolvedAt: a.resolvedAt,
        at,
      });
    });
    if (recentList.length > recentLimit) recentList.splice(0, recentList.length - recentLimit);
    if (replacements.length === 0) return allow(warnings);

    // Keep what an earlier admission of this pod (CREATE, or reinvocation) recorded.
    let previous: PinnedAnnotation = {};
    const old = annotations?.[PINNED_ANNOTATION];
    if (typeof old === 'string') {
      try {
        const v = JSON.parse(old) as unknown;
        if (isRecord(v)) previous = v as PinnedAnnotation;
      } catch {
        // not ours, or damaged: replaced
      }
    }
    const patch = buildPatch({
      replacements,
      annotations: { [PINNED_ANNOTATION]: JSON.stringify({ ...previous, ...pinned }) },
      metadata: pod.metadata,
    });
    log.info(
      {
        uid,
        namespace,
        operation,
        dryRun,
        pinned: Object.keys(pinned).length,
        unresolved: entries.length - Object.keys(pinned).length,
      },
      'pod pinned',
    );
    return envelope(apiVersion, {
      uid,
      allowed: true,
      patchType: 'JSONPatch',
      patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
      ...(warnings.length ? { warnings } : {}),
    });
  }

  return {
    metrics,
    async review(body) {
      const started = performance.now();
      try {
        if (!isRecord(body)) return badRequest('expected a JSON AdmissionReview object');
        if (body.kind !== 'AdmissionReview') {
          return badRequest('expected kind AdmissionReview');
        }
        if (typeof body.apiVersion !== 'string' || !ADMISSION_VERSIONS.has(body.apiVersion)) {
          return badRequest('expected apiVersion admission.k8s.io/v1');
        }
        const request = body.request;
        if (!isRecord(request)) return badRequest('AdmissionReview has no request object');
        if (typeof request.uid !== 'string' || request.uid === '') {
          return badRequest('AdmissionReview request.uid is missing');
        }
        // The uid is echoed in the answer (the protocol needs it): only a UID-sized one.
        if (request.uid.length > MAX_UID_LENGTH) return badRequest('AdmissionReview request.uid is too long');
        const apiVersion = body.apiVersion;
        const uid = request.uid;
        try {
          return await admit(apiVersion, uid, request);
        } catch (err) {
          // Never deny, never crash: the pod goes through unchanged.
          error('internal', { uid, err: (err as Error).message });
          log.warn({ uid, err: (err as Error).message }, 'pinner failed; pod admitted unchanged');
          const msg = `ferry pinner: internal error (${(err as Error).message}); nothing pinned`;
          return envelope(apiVersion, { uid, allowed: true, warnings: [msg] });
        }
      } finally {
        metrics.admissionDuration.observe((performance.now() - started) / 1000);
      }
    },
    recent(limit = 20) {
      if (!(limit > 0)) return [];
      return recentList
        .slice(-limit)
        .reverse()
        .map((r) => ({ ...r }));
    },
    close: () => resolver.close(),
  };
}
