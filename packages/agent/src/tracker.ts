/**
 * The tracker: keeps what this node advertises equal to what its content store can serve.
 *
 * `reconcile()` lists images and content, walks each image (index -> manifests -> config and layers),
 * keeps the digests that are present, adds the tag keys the policy allows, and advertises what is new
 * and withdraws what is gone. Events call `schedule(reason)`, which debounces: a burst costs one
 * reconcile, and reconciles never overlap. containerd replays no events and GC publishes none, so the
 * agent also schedules one on every (re)subscribe and on a timer.
 */
import {
  type Descriptor,
  isDigest,
  isManifestMediaType,
  type ParsedManifest,
  parseManifest,
  parseReference,
  tagKey,
} from '@ferry/oci';
import type { Logger } from 'pino';

/** An image record (containerd keeps one per name; CRI keeps three names per pulled image). */
export interface ImageRecord {
  /** e.g. 'docker.io/library/nginx:1.27', 'docker.io/library/nginx@sha256:…' or a bare 'sha256:<config>'. */
  name: string;
  /** The manifest or index. */
  target: Descriptor;
}

/** A blob present in the content store. */
export interface ContentRecord {
  digest: string;
  size: number;
}

/** The node's image and content store (containerd in production). */
export interface ImageStore {
  listImages(): Promise<ImageRecord[]>;
  listContent(): Promise<ContentRecord[]>;
  /** The bytes of a (small) manifest or index. */
  readManifest(digest: string): Promise<Uint8Array>;
}

/** Announces keys to the cluster (the P2P node in production). */
export interface Advertiser {
  advertise(keys: string[]): Promise<void>;
  withdraw(keys: string[]): Promise<void>;
}

/** Which references may be advertised (the registry's RefPolicy). */
export interface TrackerPolicy {
  allows(registry: string, repository: string, tag?: string): boolean;
}

type TrackerLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

/** Options of createTracker. */
export interface TrackerOptions {
  store: ImageStore;
  advertiser: Advertiser;
  /** Default: everything allowed. */
  policy?: TrackerPolicy;
  /** schedule() waits this long after the last call before reconciling. Default 200 ms. */
  debounceMs?: number;
  /** ...but never longer than this after the first call of a burst. Default 2000 ms. */
  maxDelayMs?: number;
  /** Manifests larger than this are not parsed (treated as plain blobs). Default 4 MiB. */
  maxManifestBytes?: number;
  /** Called after every successful reconcile (e.g. to update metrics). */
  onReconcile?: (result: ReconcileResult) => void;
  logger?: TrackerLogger;
}

/** Counts of what is advertised now. */
export interface TrackerCounts {
  images: number;
  digests: number;
  tags: number;
}

/** What one reconcile did. */
export interface ReconcileResult {
  /** Keys newly advertised (successfully handed to the advertiser). */
  advertised: string[];
  /** Keys withdrawn. */
  withdrawn: string[];
  counts: TrackerCounts;
  durationMs: number;
}

/** One image (all names sharing a target digest) in the snapshot. */
export interface ImageSnapshot {
  /** The target digest (manifest or index). */
  digest: string;
  mediaType: string;
  /** The real reference names (bare config ids left out). */
  names: string[];
  /** False when the policy filters every name. */
  allowed: boolean;
  /** True when the target is in the content store. */
  present: boolean;
  /** Digests of this image that are present (target included). */
  digests: number;
}

/** A view for the status page. */
export interface TrackerSnapshot {
  keys: { digests: string[]; tags: string[] };
  images: ImageSnapshot[];
  lastReconcile?: { at: string; durationMs: number; advertised: number; withdrawn: number; error?: string };
}

export interface Tracker {
  /** Reconciles now (after a running one finishes; concurrent callers share the next run). */
  reconcile(): Promise<ReconcileResult>;
  /** Asks for a reconcile soon (debounced); errors are logged. */
  schedule(reason: string): void;
  /** Resolves when nothing is scheduled or running. */
  idle(): Promise<void>;
  /** The media type of a present digest, learned from the descriptor that references it. */
  mediaTypeOf(digest: string): string | undefined;
  /** True while the key (a digest or a tag key) is advertised. */
  advertises(key: string): boolean;
  snapshot(): TrackerSnapshot;
  counts(): TrackerCounts;
  /** Cancels a scheduled reconcile and waits for a running one; schedule() is a no-op afterwards. */
  stop(): Promise<void>;
}

interface ImageGroup {
  target: Descriptor;
  names: string[];
  /** Repository-level policy passed for at least one name: its digests may be advertised. */
  allowed: boolean;
  tagKeys: string[];
}

function isTagKey(key: string): boolean {
  return !isDigest(key);
}

/** Creates a tracker. Nothing happens until reconcile() or schedule() is called. */
export function createTracker(opts: TrackerOptions): Tracker {
  const { store, advertiser } = opts;
  const policy = opts.policy ?? { allows: () => true };
  const debounceMs = opts.debounceMs ?? 200;
  const maxDelayMs = opts.maxDelayMs ?? 2000;
  const maxManifestBytes = opts.maxManifestBytes ?? 4 * 1024 * 1024;
  const log = opts.logger;

  const manifests = new Map<string, ParsedManifest>(); // immutable by digest
  let mediaTypes = new Map<string, string>();
  const advertised = new Set<string>();
  let images: ImageSnapshot[] = [];
  let last: TrackerSnapshot['lastReconcile'];
  let imageCount = 0;

  let running: Promise<ReconcileResult> | undefined;
  let rerun: Promise<ReconcileResult> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let burstStart = 0;
  let reasons = new Set<string>();
  let stopped = false;

  function groupImages(records: ImageRecord[]): Map<string, ImageGroup> {
    const groups = new Map<string, ImageGroup>();
    for (const rec of records) {
      const digest = rec.target?.digest;
      if (typeof digest !== 'string' || !isDigest(digest)) continue;
      let g = groups.get(digest);
      if (!g) {
        g = { target: rec.target, names: [], allowed: false, tagKeys: [] };
        groups.set(digest, g);
      }
      if (isDigest(rec.name)) continue; // CRI's bare image id record
      let ref: ReturnType<typeof parseReference>;
      try {
        ref = parseReference(rec.name);
      } catch {
        log?.debug({ name: rec.name }, 'tracker: image name is not a reference, ignored');
        continue;
      }
      // parseReference adds ':latest' to bare names; such a name has no real tag.
      const explicitTag =
        ref.tag !== undefined && (ref.digest !== undefined || rec.name.endsWith(`:${ref.tag}`));
      g.names.push(rec.name);
      if (policy.allows(ref.registry, ref.repository)) g.allowed = true;
      if (explicitTag && ref.tag !== undefined && policy.allows(ref.registry, ref.repository, ref.tag)) {
        g.tagKeys.push(tagKey(ref.registry, ref.repository, ref.tag));
      }
    }
    return groups;
  }

  async function manifestOf(d: Descriptor, size: number): Promise<ParsedManifest | undefined> {
    const cached = manifests.get(d.digest);
    if (cached) return cached;
    if (size > maxManifestBytes) {
      log?.warn({ digest: d.digest, size }, 'tracker: manifest too large to walk');
      return undefined;
    }
    let bytes: Uint8Array;
    try {
      bytes = await store.readManifest(d.digest);
    } catch (err) {
      // Possibly removed since the listing; not cached, the next reconcile tries again.
      log?.warn({ digest: d.digest, err }, 'tracker: cannot read manifest');
      return undefined;
    }
    try {
      const parsed = parseManifest(bytes, d.mediaType);
      manifests.set(d.digest, parsed);
      return parsed;
    } catch (err) {
      log?.warn({ digest: d.digest, err }, 'tracker: cannot parse manifest');
      return undefined;
    }
  }

  /** Walks from a target; returns the present digests (and records their media types). */
  async function walk(
    target: Descriptor,
    present: Map<string, number>,
    types: Map<string, string>,
  ): Promise<Set<string>> {
    const found = new Set<string>();
    const queue: Descriptor[] = [target];
    while (queue.length > 0) {
      const d = queue.shift()!;
      if (found.has(d.digest)) continue;
      const size = present.get(d.digest);
      if (size === undefined) continue; // not on this node (e.g. another platform of an index)
      found.add(d.digest);
      if (!types.has(d.digest) && d.mediaType) types.set(d.digest, d.mediaType);
      if (isManifestMediaType(d.mediaType)) {
        const m = await manifestOf(d, size);
        if (m) queue.push(...m.children);
      }
    }
    return found;
  }

  async function runOnce(): Promise<ReconcileResult> {
    const started = performance.now();
    try {
      const [records, content] = await Promise.all([store.listImages(), store.listContent()]);
      const listed = performance.now();
      const present = new Map<string, number>();
      for (const c of content) present.set(c.digest, c.size);
      const groups = groupImages(records);
      const desired = new Set<string>();
      const types = new Map<string, string>();
      const snap: ImageSnapshot[] = [];
      for (const [digest, g] of groups) {
        const isPresent = present.has(digest);
        let count = 0;
        if (g.allowed && isPresent) {
          const found = await walk(g.target, present, types);
          count = found.size;
          for (const d of found) desired.add(d);
          for (const k of g.tagKeys) desired.add(k);
        }
        if (g.names.length > 0) {
          snap.push({
            digest,
            mediaType: g.target.mediaType,
            names: [...g.names].sort(),
            allowed: g.allowed,
            present: isPresent,
            digests: count,
          });
        }
      }
      // Forget parsed manifests that left the store.
      for (const d of manifests.keys()) if (!present.has(d)) manifests.delete(d);
      mediaTypes = types;
      images = snap.sort((a, b) => (a.names[0] ?? a.digest).localeCompare(b.names[0] ?? b.digest));
      imageCount = snap.length;

      const walked = performance.now();
      const added = [...desired].filter((k) => !advertised.has(k)).sort();
      const gone = [...advertised].filter((k) => !desired.has(k)).sort();
      const [adv, wd] = await Promise.allSettled([
        added.length > 0 ? advertiser.advertise(added) : Promise.resolve(),
        gone.length > 0 ? advertiser.withdraw(gone) : Promise.resolve(),
      ]);
      const doneAdded: string[] = [];
      const doneGone: string[] = [];
      if (adv.status === 'fulfilled') {
        for (const k of added) advertised.add(k);
        doneAdded.push(...added);
      } else
        log?.warn(
          { err: adv.reason, keys: added.length },
          'tracker: advertise failed; retried next reconcile',
        );
      if (wd.status === 'fulfilled') {
        for (const k of gone) advertised.delete(k);
        doneGone.push(...gone);
      } else
        log?.warn({ err: wd.reason, keys: gone.length }, 'tracker: withdraw failed; retried next reconcile');

      const durationMs = performance.now() - started;
      const result: ReconcileResult = {
        advertised: doneAdded,
        withdrawn: doneGone,
        counts: counts(),
        durationMs,
      };
      last = {
        at: new Date().toISOString(),
        durationMs,
        advertised: doneAdded.length,
        withdrawn: doneGone.length,
      };
      if (doneAdded.length > 0 || doneGone.length > 0) {
        log?.info(
          {
            advertised: doneAdded.length,
            withdrawn: doneGone.length,
            ...result.counts,
            // where the time went: containerd's listings, the manifest walk, advertise and withdraw
            ms: {
              list: Math.round(listed - started),
              walk: Math.round(walked - listed),
              advertise: Math.round(durationMs - (walked - started)),
            },
          },
          'tracker: reconciled',
        );
      }
      try {
        opts.onReconcile?.(result);
      } catch (err) {
        log?.warn({ err }, 'tracker: onReconcile threw');
      }
      return result;
    } catch (err) {
      last = {
        at: new Date().toISOString(),
        durationMs: performance.now() - started,
        advertised: 0,
        withdrawn: 0,
        error: (err as Error).message,
      };
      throw err;
    }
  }

  function reconcile(): Promise<ReconcileResult> {
    if (!running) {
      running = runOnce().finally(() => {
        running = undefined;
      });
      return running;
    }
    if (!rerun) {
      rerun = running
        .catch(() => undefined)
        .then(() => {
          rerun = undefined;
          return reconcile();
        });
    }
    return rerun;
  }

  function fire(): void {
    timer = undefined;
    const why = [...reasons];
    reasons = new Set();
    log?.debug({ reasons: why }, 'tracker: reconcile scheduled');
    reconcile().catch((err) => log?.error({ err, reasons: why }, 'tracker: reconcile failed'));
  }

  function schedule(reason: string): void {
    if (stopped) return;
    reasons.add(reason);
    const now = performance.now();
    if (timer === undefined) burstStart = now;
    else clearTimeout(timer);
    const wait = Math.max(0, Math.min(debounceMs, burstStart + maxDelayMs - now));
    timer = setTimeout(fire, wait);
  }

  function counts(): TrackerCounts {
    let tags = 0;
    for (const k of advertised) if (isTagKey(k)) tags++;
    return { images: imageCount, digests: advertised.size - tags, tags };
  }

  async function idle(): Promise<void> {
    for (;;) {
      if (timer === undefined && !running && !rerun) return;
      if (running || rerun) await Promise.allSettled([running, rerun]);
      else await new Promise((r) => setTimeout(r, Math.min(debounceMs, 10)));
    }
  }

  return {
    reconcile,
    schedule,
    idle,
    mediaTypeOf: (digest) => mediaTypes.get(digest),
    advertises: (key) => advertised.has(key),
    snapshot: () => {
      const keys = [...advertised].sort();
      return {
        keys: { digests: keys.filter((k) => !isTagKey(k)), tags: keys.filter(isTagKey) },
        images: images.map((i) => ({ ...i, names: [...i.names] })),
        ...(last ? { lastReconcile: { ...last } } : {}),
      };
    },
    counts,
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      await Promise.allSettled([running, rerun]);
    },
  };
}
