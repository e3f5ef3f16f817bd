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
  /** `upstream`: this node asked the upstream; `peer`: a peer said so; `local`: an image held here. */
  source: 'upstream' | 'last-known' | 'local' | 'peer';
  /** For `source: 'peer'`: who answered (a peer id, or 'cluster' for the pinner's agent). */
  peer?: string;
  /** Set by a last-known store: when this node stored the record (ms since epoch, its own clock). */
  learnedAt?: number;
}

/** What the upstream said about a tag. Network conditions are outcomes, never exceptions. */
export type UpstreamOutcome =
  | { kind: 'resolved'; digest: string; mediaType?: string; size?: number }
  /** Connection refused/reset, timeout, 5xx, 429 (and any other unexpected answer). */
  /** `reason` is safe to show to clients (never tells network failures apart); `detail` is for logs. */
  | { kind: 'unavailable'; reason: string; detail?: string }
  /** No credentials for it, or they were rejected. */
  | { kind: 'unauthorized'; status: 401 | 403 }
  /** 404 MANIFEST_UNKNOWN / NAME_UNKNOWN. */
  | { kind: 'not-found' };

/** What the upstream answered for content (a blob or a manifest) by digest. */
export type ContentOutcome =
  | {
      kind: 'content';
      /** The whole content's size (from Content-Length, or Content-Range's total). */
      size: number;
      /** Where `body` starts (the requested offset). */
      offset: number;
      mediaType?: string;
      /** The bytes from `offset` to the end, unverified. */
      body: AsyncIterable<Buffer>;
      /** Stop reading and release the connection. */
      cancel(): void;
    }
  | Exclude<UpstreamOutcome, { kind: 'resolved' }>;

/** Asks the upstream which digest a tag names (@ferry/resolver implements, @ferry/registry and @ferry/pinner consume). */
export interface TagUpstream {
  /** HEAD the manifest (GET when HEAD is refused, 405), Accept = manifest media types; anonymous or
   *  Basic→Bearer token flow (WWW-Authenticate: Bearer realm,service,scope), tokens cached until expiry. */
  resolveTag(
    registry: string,
    repository: string,
    tag: string,
    opts?: { signal?: AbortSignal },
  ): Promise<UpstreamOutcome>;
  /** True when the credentials hold an entry for this registry (normalised host). */
  hasCredentials(registry: string): boolean;
}

/** Fetches content by digest from the upstream (@ferry/resolver implements, @ferry/registry's pull-through consumes). */
export interface ContentUpstream {
  /**
   * GET a blob or manifest by digest, streaming, through the same endpoints, auth flows and
   * credentials as `resolveTag`; `offset` > 0 asks for the rest (Range). The deadline covers the
   * headers (token fetch included); the body then flows until `signal` aborts. Network failures are
   * outcomes (`unavailable`), never exceptions; a body may still fail mid-way.
   */
  fetchContent(
    registry: string,
    repository: string,
    kind: 'blobs' | 'manifests',
    digest: string,
    opts?: { offset?: number; signal?: AbortSignal },
  ): Promise<ContentOutcome>;
}
