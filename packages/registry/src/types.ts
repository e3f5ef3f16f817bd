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
