import type { TagResolution } from '@ferry/interface';
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
  openFile?(digest: string): Promise<BodyFile | undefined>;
}

/** A content file as the blob path reads it (a FileHandle fits; a spool entry still being fed too). */
export interface BodyFile {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  /**
   * For a file still growing: waits until a byte at `pos` may be read and resolves with the end
   * (exclusive) of what may be read now. Rejects when the content failed or `signal` aborted.
   */
  readableUpTo?(pos: number, signal: AbortSignal): Promise<number>;
  close(): Promise<void>;
}

/** Where resolutions are kept across restarts (@ferry/resolver's LastKnownStore fits). */
export interface TagRecordStore {
  /**
   * Durable when it resolves; keeps the newest (by resolvedAt) per tag, except that an upstream answer
   * (`source: upstream`) always replaces a peer-learned record and is never refused.
   */
  record(r: TagResolution): Promise<void>;
  get(registry: string, repository: string, tag: string): Promise<TagResolution | undefined>;
}
