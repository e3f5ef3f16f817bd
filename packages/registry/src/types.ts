import type { FileHandle } from 'node:fs/promises';
import type { ByteRange } from '@ferry/oci';

/** What the node holds for one digest. */
export interface ContentInfo {
  digest: string;
  size: number;
  mediaType?: string;
}

/** The node's local content (containerd in production). */
export interface ContentSource {
  /** Image `registry/repo:tag` held locally -> its target; undefined when not held. */
  resolveTag(registry: string, repository: string, tag: string): Promise<ContentInfo | undefined>;
  /** undefined = not present. */
  stat(digest: string): Promise<ContentInfo | undefined>;
  /** Stream the content, or the inclusive byte range of it. */
  open(digest: string, range?: ByteRange): Promise<NodeJS.ReadableStream>;
  /**
   * Optional fast path: the content's file, opened read-only (the registry closes it), or undefined to
   * fall back to {@link open}. Blob bodies are then read into recycled buffers (see `file-body.ts`).
   */
  openFile?(digest: string): Promise<FileHandle | undefined>;
}

/** A registry endpoint: http://host:port */
export interface Peer {
  id: string;
  host: string;
  port: number;
}

/** Finds peers holding a key: a digest 'sha256:…' or a tag key '<registry>/<repo>:<tag>'. */
export interface Router {
  lookup(key: string, options: { signal: AbortSignal }): AsyncIterable<Peer>;
}

/**
 * How a tag request is answered: `cluster` (what the cluster holds), `upstream` (never: 404 so containerd
 * asks the upstream), `verify` (ask the upstream for the digest, serve it from the cluster; during an
 * upstream outage, the cluster's last-known digest).
 */
export type TagMode = 'cluster' | 'upstream' | 'verify';

/** One answer to "which digest is `<registry>/<repo>:<tag>`", with where and when it was learned. */
export interface TagResolution {
  registry: string;
  repository: string;
  tag: string;
  digest: string;
  mediaType?: string;
  size?: number;
  /** ms since epoch when the upstream (originally) answered; 0 = unknown. */
  resolvedAt: number;
  source: 'upstream' | 'last-known' | 'local' | 'peer';
}

/** What the upstream said about a tag (the shape of @ferry/resolver's UpstreamOutcome). */
export type UpstreamTagOutcome =
  | { kind: 'resolved'; digest: string; mediaType?: string; size?: number }
  | { kind: 'unavailable'; reason: string }
  | { kind: 'unauthorized'; status: 401 | 403 }
  | { kind: 'not-found' };

/** Asks the upstream registry which digest a tag names (@ferry/resolver's UpstreamClient fits). */
export interface TagUpstream {
  resolveTag(
    registry: string,
    repository: string,
    tag: string,
    opts?: { signal?: AbortSignal },
  ): Promise<UpstreamTagOutcome>;
  /** True when credentials are configured for the registry. */
  hasCredentials(registry: string): boolean;
}

/** Where resolutions are kept across restarts (@ferry/resolver's LastKnownStore fits). */
export interface TagRecordStore {
  /** Durable when it resolves; keeps the newest (by resolvedAt) per tag. */
  record(r: TagResolution): Promise<void>;
  get(registry: string, repository: string, tag: string): Promise<TagResolution | undefined>;
}
