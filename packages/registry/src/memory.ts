import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Peer, Router, TagResolution } from '@ferry/interface';
import type { ByteRange } from '@ferry/oci';
import { tagKey } from '@ferry/oci';
import type { ContentInfo, ContentSource, TagRecordStore } from './types.ts';

/** An in-memory {@link ContentSource} for tests. */
export interface MemoryContentSource extends ContentSource {
  /** Stores bytes under their sha256 digest and returns the info. */
  add(bytes: Uint8Array | string, mediaType?: string): ContentInfo;
  /** Points `registry/repository:tag` at a stored digest. */
  tag(registry: string, repository: string, tag: string, digest: string): void;
  /** Forgets a digest (tags pointing at it stop resolving). */
  remove(digest: string): void;
}

/** Options for {@link createMemoryContentSource}. */
export interface MemoryContentSourceOptions {
  /** Size of the chunks `open` streams. Default 16 KiB. */
  chunkSize?: number;
}

/** Creates an empty {@link MemoryContentSource}. */
export function createMemoryContentSource(options: MemoryContentSourceOptions = {}): MemoryContentSource {
  const chunkSize = options.chunkSize ?? 16 * 1024;
  const blobs = new Map<string, { info: ContentInfo; bytes: Uint8Array }>();
  const tags = new Map<string, string>();
  return {
    add(input, mediaType) {
      const bytes = typeof input === 'string' ? new TextEncoder().encode(input) : input;
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      const info: ContentInfo =
        mediaType === undefined ? { digest, size: bytes.length } : { digest, size: bytes.length, mediaType };
      blobs.set(digest, { info, bytes });
      return { ...info };
    },
    tag(registry, repository, tag, digest) {
      tags.set(tagKey(registry, repository, tag), digest);
    },
    remove(digest) {
      blobs.delete(digest);
    },
    async resolveTag(registry, repository, tag) {
      const digest = tags.get(tagKey(registry, repository, tag));
      const entry = digest === undefined ? undefined : blobs.get(digest);
      return entry === undefined ? undefined : { ...entry.info };
    },
    async stat(digest) {
      const entry = blobs.get(digest);
      return entry === undefined ? undefined : { ...entry.info };
    },
    async open(digest, range?: ByteRange) {
      const entry = blobs.get(digest);
      if (entry === undefined) throw new Error(`content ${digest} not found`);
      const start = range?.start ?? 0;
      const end = range === undefined ? entry.bytes.length : Math.min(range.end + 1, entry.bytes.length);
      const bytes = entry.bytes;
      function* chunks(): Generator<Uint8Array> {
        for (let at = start; at < end; at += chunkSize)
          yield bytes.subarray(at, Math.min(at + chunkSize, end));
      }
      return Readable.from(chunks(), { objectMode: false });
    },
  };
}

/** An in-memory {@link Router} for tests: `lookup` yields the peers added for a key, then ends. */
export interface MemoryRouter extends Router {
  /** Adds a peer as a provider of a key. */
  add(key: string, peer: Peer): void;
  /** Removes one peer (or, without a peer, all peers) for a key. */
  remove(key: string, peer?: Peer): void;
  /** Keys looked up so far, in order (to assert what the registry asked for). */
  readonly lookups: string[];
}

/** Creates a {@link MemoryRouter}, optionally seeded with `key -> peers`. */
export function createMemoryRouter(initial: Record<string, Peer[]> = {}): MemoryRouter {
  const providers = new Map<string, Peer[]>(Object.entries(initial).map(([k, v]) => [k, [...v]]));
  const lookups: string[] = [];
  return {
    lookups,
    add(key, peer) {
      const list = providers.get(key) ?? [];
      if (!list.some((p) => p.id === peer.id)) list.push(peer);
      providers.set(key, list);
    },
    remove(key, peer) {
      if (peer === undefined) providers.delete(key);
      else
        providers.set(
          key,
          (providers.get(key) ?? []).filter((p) => p.id !== peer.id),
        );
    },
    async *lookup(key, { signal }) {
      lookups.push(key);
      for (const peer of [...(providers.get(key) ?? [])]) {
        if (signal.aborted) return;
        yield peer;
      }
    },
  };
}

/** An in-memory {@link TagRecordStore} for tests: the newest resolution per tag; upstream answers replace peer-learned ones. */
export interface MemoryTagStore extends TagRecordStore {
  /** Everything recorded, in order (to assert what was written). */
  readonly records: TagResolution[];
}

/** Creates an empty {@link MemoryTagStore}. */
export function createMemoryTagStore(): MemoryTagStore {
  const byTag = new Map<string, TagResolution>();
  const records: TagResolution[] = [];
  return {
    records,
    async record(r) {
      records.push({ ...r });
      const key = tagKey(r.registry, r.repository, r.tag);
      const old = byTag.get(key);
      // As the LevelDB store: an upstream answer always replaces a peer-learned record; else newest wins.
      const replaces = r.source === 'upstream' && old?.source !== 'upstream';
      if (old === undefined || replaces || r.resolvedAt >= old.resolvedAt) byTag.set(key, { ...r });
    },
    async get(registry, repository, tag) {
      const r = byTag.get(tagKey(registry, repository, tag));
      return r === undefined ? undefined : { ...r };
    },
  };
}
