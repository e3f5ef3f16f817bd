/**
 * `/debug/measure?image=REF`: times a DHT lookup of the image's tag key and of each of its digests, and a
 * pull of the image through the node's own mirror (manifest, then every blob it names, bytes discarded),
 * and reports per digest where it came from. Bounded: per-lookup and per-request deadlines, a total
 * deadline, a byte budget, and one measurement at a time.
 */
import { createHash } from 'node:crypto';
import type { Router } from '@ferry/interface';
import {
  type Descriptor,
  isIndexMediaType,
  manifestAcceptTypes,
  OciError,
  parseManifest,
  parseReference,
  type Reference,
  tagKey,
} from '@ferry/oci';
import type { RequestHistory, StatusRequest } from './history.ts';

/** Options of createMeasurer. */
export interface MeasurerOptions {
  /** The DHT (the agent's P2P node). */
  router: Router;
  /** Base URL of the node's own registry, e.g. `http://127.0.0.1:5000`. */
  registryUrl: string;
  /** The registry's request history: tells which source served each request. */
  history: RequestHistory;
  /** Deadline of one DHT lookup (until the first provider). Default 2000 ms. */
  lookupTimeoutMs?: number;
  /** Deadline for a response's headers, and the longest pause between body chunks. Default 10000 ms. */
  requestTimeoutMs?: number;
  /** Deadline of a whole measurement; what is left is reported as skipped. Default 120000 ms. */
  totalTimeoutMs?: number;
  /** Most body bytes read in one measurement; later blobs are skipped. Default 2 GiB. */
  maxBytes?: number;
  /** Largest manifest or index read. Default 4 MiB. */
  maxManifestBytes?: number;
  /** Platform whose manifest is followed in an index. Default: linux and this machine's architecture. */
  platform?: { os: string; architecture: string };
}

/** The DHT lookup of one key. */
export interface LookupResult {
  key: string;
  /** A provider was found before the deadline. */
  found: boolean;
  /** The first provider. */
  peer?: string;
  /** Time until the first provider, or until the lookup ended / timed out. */
  ms: number;
  error?: string;
}

/** The pull of one manifest or blob through the local mirror. */
export interface PullResult {
  /** HTTP status of the local registry's answer (0: no answer). */
  status: number;
  /** Where the mirror got it: local, peer, miss, filtered, invalid (unknown when no event was seen). */
  source: string;
  peer?: string;
  bytes: number;
  ms: number;
  error?: string;
}

/** One row: a tag or a digest of the image. */
export interface MeasureRow {
  /** What this key is in the image. */
  role: 'tag' | 'index' | 'manifest' | 'config' | 'layer' | 'blob';
  /** The tag key `<registry>/<repo>:<tag>` or the digest. */
  key: string;
  mediaType?: string;
  /** Size from the descriptor, when known. */
  size?: number;
  lookup: LookupResult;
  /** Absent when skipped (deadline or byte budget). */
  pull?: PullResult;
  skipped?: string;
}

/** What one measurement found. */
export interface MeasureResult {
  image: string;
  reference: Reference;
  startedAt: string;
  totalMs: number;
  rows: MeasureRow[];
  totals: { bytes: number; fromPeers: number; local: number; misses: number };
  /** Why the measurement stopped early, when it did. */
  stopped?: string;
}

/** A measurement is already running. */
export class MeasureBusyError extends Error {
  constructor() {
    super('a measurement is already running; try again when it has finished');
    this.name = 'MeasureBusyError';
  }
}

/** Times lookups and pulls, one measurement at a time. */
export interface Measurer {
  /** A measurement is running. */
  busy(): boolean;
  /** Measures `image`. Throws OciError on a bad reference, MeasureBusyError while another one runs. */
  measure(image: string): Promise<MeasureResult>;
}

function goArch(arch: string): string {
  if (arch === 'x64') return 'amd64';
  if (arch === 'ia32') return '386';
  return arch;
}

/** Parses an image reference for a measurement; throws OciError (400) with a clear message. */
export function parseMeasureReference(image: string | undefined): Reference {
  const text = (image ?? '').trim();
  if (text === '')
    throw new OciError('NAME_INVALID', 'missing ?image=REF (e.g. ?image=docker.io/library/nginx:1.27)', 400);
  try {
    return parseReference(text);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new OciError('NAME_INVALID', `invalid image reference ${JSON.stringify(text)}: ${message}`, 400);
  }
}

/** Creates a measurer. */
export function createMeasurer(opts: MeasurerOptions): Measurer {
  const lookupTimeoutMs = opts.lookupTimeoutMs ?? 2000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  const totalTimeoutMs = opts.totalTimeoutMs ?? 120_000;
  const maxBytes = opts.maxBytes ?? 2 * 1024 ** 3;
  const maxManifestBytes = opts.maxManifestBytes ?? 4 * 1024 * 1024;
  const platform = opts.platform ?? { os: 'linux', architecture: goArch(process.arch) };
  const base = opts.registryUrl.replace(/\/+$/, '');
  let running = false;

  async function lookup(key: string, deadline: AbortSignal): Promise<LookupResult> {
    const started = performance.now();
    const signal = AbortSignal.any([deadline, AbortSignal.timeout(lookupTimeoutMs)]);
    const ac = new AbortController();
    const both = AbortSignal.any([signal, ac.signal]);
    try {
      for await (const peer of opts.router.lookup(key, { signal: both })) {
        ac.abort();
        return { key, found: true, peer: peer.id, ms: performance.now() - started };
      }
      return { key, found: false, ms: performance.now() - started };
    } catch (err) {
      const ms = performance.now() - started;
      if (signal.aborted) return { key, found: false, ms, error: `no provider within ${lookupTimeoutMs} ms` };
      return { key, found: false, ms, error: (err as Error).message };
    }
  }

  /** GETs a path of the local registry, reading at most `limit` bytes (kept when `keep`). */
  async function pull(
    path: string,
    key: string,
    opt: { accept?: string; keep: boolean; limit: number; deadline: AbortSignal },
  ): Promise<{ result: PullResult; body?: Buffer; mediaType?: string }> {
    const started = performance.now();
    const startedAt = Date.now();
    // The registry reports each request when its response ends: take the first one for this key.
    let seen: StatusRequest | undefined;
    let onSeen: (() => void) | undefined;
    const unsubscribe = opts.history.subscribe((r) => {
      if (seen || r.mirrored || r.method !== 'GET' || r.key !== key) return;
      if (Date.parse(r.at) < startedAt - 1000) return;
      seen = r;
      r.by = 'measure';
      onSeen?.();
    });
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
      }, requestTimeoutMs);
    };
    const signal = AbortSignal.any([ac.signal, opt.deadline]);
    const chunks: Buffer[] = [];
    let bytes = 0;
    let status = 0;
    let mediaType: string | undefined;
    let error: string | undefined;
    try {
      arm();
      const res = await fetch(`${base}${path}`, {
        headers: opt.accept ? { accept: opt.accept } : {},
        signal,
      });
      status = res.status;
      mediaType = res.headers.get('content-type')?.split(';')[0]?.trim() || undefined;
      if (res.body) {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          arm();
          bytes += chunk.length;
          if (opt.keep && res.ok) chunks.push(Buffer.from(chunk));
          if (bytes > opt.limit) {
            error = `stopped after ${opt.limit} bytes (limit)`;
            ac.abort();
            break;
          }
        }
      }
      if (!res.ok) error = `HTTP ${res.status}`;
    } catch (err) {
      if (error !== undefined) {
        // Stopped on purpose (byte limit): the abort that follows is ours.
      } else if (timedOut) error = `no data for ${requestTimeoutMs} ms`;
      else if (opt.deadline.aborted) error = 'measurement deadline reached';
      else error = (err as Error).message;
    } finally {
      clearTimeout(timer);
    }
    const ms = performance.now() - started;
    if (!seen && status !== 0) {
      // The event comes when the response has ended on the server side: wait briefly for it.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1000);
        onSeen = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    unsubscribe();
    const found = seen as StatusRequest | undefined;
    const result: PullResult = {
      status,
      source: found?.outcome ?? 'unknown',
      bytes,
      ms,
      ...(found?.peer === undefined ? {} : { peer: found.peer }),
      ...(error === undefined ? {} : { error }),
    };
    return {
      result,
      ...(opt.keep && status >= 200 && status < 300 ? { body: Buffer.concat(chunks) } : {}),
      ...(mediaType === undefined ? {} : { mediaType }),
    };
  }

  async function run(image: string, ref: Reference): Promise<MeasureResult> {
    const started = performance.now();
    const startedAt = new Date().toISOString();
    const deadline = AbortSignal.timeout(totalTimeoutMs);
    const ns = `ns=${encodeURIComponent(ref.registry)}`;
    const repo = ref.repository;
    const rows: MeasureRow[] = [];
    let budget = maxBytes;
    let stopped: string | undefined;
    const acceptManifests = manifestAcceptTypes.join(', ');

    const stop = (): string | undefined => {
      if (stopped) return stopped;
      if (deadline.aborted) stopped = `measurement deadline (${totalTimeoutMs} ms) reached`;
      else if (budget <= 0) stopped = `byte budget (${maxBytes} bytes) used up`;
      return stopped;
    };

    /** Looks up and pulls one manifest; returns its parsed children. */
    const manifestRow = async (
      role: MeasureRow['role'],
      key: string,
      reference: string,
      desc?: Descriptor,
    ): Promise<{ children: Descriptor[]; isIndex: boolean; digest?: string } | undefined> => {
      const row: MeasureRow = {
        role,
        key,
        ...(desc ? { mediaType: desc.mediaType, size: desc.size } : {}),
        lookup: await lookup(key, deadline),
      };
      rows.push(row);
      const why = stop();
      if (why) {
        row.skipped = why;
        return undefined;
      }
      const got = await pull(`/v2/${repo}/manifests/${reference}?${ns}`, key, {
        accept: acceptManifests,
        keep: true,
        limit: Math.min(maxManifestBytes, budget),
        deadline,
      });
      row.pull = got.result;
      budget -= got.result.bytes;
      if (got.mediaType && !row.mediaType) row.mediaType = got.mediaType;
      if (!got.body) return undefined;
      try {
        const parsed = parseManifest(got.body, desc?.mediaType ?? got.mediaType);
        if (role === 'tag' || role === 'manifest' || role === 'index')
          row.role = role === 'tag' ? 'tag' : parsed.isIndex ? 'index' : 'manifest';
        const digest = `sha256:${createHash('sha256').update(got.body).digest('hex')}`;
        return { children: parsed.children, isIndex: parsed.isIndex, digest };
      } catch (err) {
        row.pull.error = `not a manifest: ${(err as Error).message}`;
        return undefined;
      }
    };

    let manifest: { children: Descriptor[]; isIndex: boolean } | undefined;
    if (ref.digest !== undefined) {
      manifest = await manifestRow('manifest', ref.digest, ref.digest);
    } else {
      const tag = ref.tag ?? 'latest';
      const byTag = await manifestRow('tag', tagKey(ref.registry, repo, tag), tag);
      // The tag's digest is a key of its own in the DHT: look it up and pull it by digest too.
      manifest = byTag?.digest ? await manifestRow('manifest', byTag.digest, byTag.digest) : byTag;
    }

    // An index: follow this node's platform (as containerd does), the first manifest otherwise.
    const seenDigests = new Set<string>();
    for (let depth = 0; manifest?.isIndex && depth < 2; depth += 1) {
      const children = manifest.children.filter((c) => !isIndexMediaType(c.mediaType) || depth === 0);
      const pick =
        children.find(
          (c) => c.platform?.os === platform.os && c.platform?.architecture === platform.architecture,
        ) ?? children[0];
      if (!pick || seenDigests.has(pick.digest)) break;
      seenDigests.add(pick.digest);
      manifest = await manifestRow('manifest', pick.digest, pick.digest, pick);
    }

    if (manifest && !manifest.isIndex) {
      for (const child of manifest.children) {
        if (seenDigests.has(child.digest)) continue;
        seenDigests.add(child.digest);
        const role: MeasureRow['role'] = /config/i.test(child.mediaType)
          ? 'config'
          : /layer|tar/i.test(child.mediaType)
            ? 'layer'
            : 'blob';
        const row: MeasureRow = {
          role,
          key: child.digest,
          mediaType: child.mediaType,
          size: child.size,
          lookup: await lookup(child.digest, deadline),
        };
        rows.push(row);
        const why = stop();
        if (why) {
          row.skipped = why;
          continue;
        }
        const got = await pull(`/v2/${repo}/blobs/${child.digest}?${ns}`, child.digest, {
          keep: false,
          limit: budget,
          deadline,
        });
        row.pull = got.result;
        budget -= got.result.bytes;
      }
    }

    const totals = { bytes: 0, fromPeers: 0, local: 0, misses: 0 };
    for (const r of rows) {
      if (!r.pull) continue;
      totals.bytes += r.pull.bytes;
      if (r.pull.source === 'peer') totals.fromPeers += r.pull.bytes;
      if (r.pull.source === 'local') totals.local += r.pull.bytes;
      if (r.pull.source === 'miss' || r.pull.status === 404) totals.misses += 1;
    }
    return {
      image,
      reference: ref,
      startedAt,
      totalMs: performance.now() - started,
      rows,
      totals,
      ...(stopped ? { stopped } : {}),
    };
  }

  return {
    busy: () => running,
    async measure(image) {
      const ref = parseMeasureReference(image);
      if (running) throw new MeasureBusyError();
      running = true;
      try {
        return await run(image.trim(), ref);
      } finally {
        running = false;
      }
    },
  };
}
