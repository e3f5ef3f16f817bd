import type { TagResolution as Resolution, UpstreamOutcome } from '@ferry/interface';
import type { Dispatcher } from 'undici';

/** A tag resolution and the upstream's outcome are shared contracts (@ferry/interface). */
export type { Resolution, UpstreamOutcome };

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

/** One entry of a Docker `config.json` `auths` map. */
export interface DockerAuthEntry {
  /** base64 of `username:password`. */
  auth?: string;
  username?: string;
  password?: string;
  /** OAuth2 refresh token, exchanged at the token realm (POST grant_type=refresh_token). */
  identitytoken?: string;
  /** A bearer token sent as is to the registry. */
  registrytoken?: string;
}

/** Docker `config.json` (also the `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret). */
export interface DockerConfig {
  /** Keys: bare hosts (`ghcr.io`, `127.0.0.1:5000`), URLs, or `https://index.docker.io/v1/` for docker.io. */
  auths?: Record<string, DockerAuthEntry>;
}

export interface UpstreamClientOptions {
  /** Per-request deadline for a whole resolution, token fetch included (default 1000 ms). */
  timeoutMs?: number;
  /** registry host -> base URL. Default https://<host>; 'docker.io' -> https://registry-1.docker.io. */
  endpoints?: Record<string, string>;
  /** Docker config.json contents (auths: { host: { auth | username/password | identitytoken } }). */
  credentials?: DockerConfig;
  /** undici dispatcher (tests). Default: an Agent owned and closed by the client. */
  dispatcher?: Dispatcher;
}

export interface UpstreamClient {
  /** HEAD the manifest (GET when HEAD is refused, 405), Accept = manifestAcceptTypes; anonymous or
   *  Basic→Bearer token flow (WWW-Authenticate: Bearer realm,service,scope), tokens cached until expiry. */
  resolveTag(
    registry: string,
    repository: string,
    tag: string,
    opts?: { signal?: AbortSignal },
  ): Promise<UpstreamOutcome>;
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
  /** True when the credentials hold an entry for this registry (normalised host). */
  hasCredentials(registry: string): boolean;
  close(): Promise<void>;
}

export interface LastKnownStore {
  /** Durable before it resolves (sync write): a kill -9 after it resolves loses nothing. Keeps the newest per tag. */
  record(r: Resolution): Promise<void>;
  get(registry: string, repository: string, tag: string): Promise<Resolution | undefined>;
  /** Newest first, for status pages. */
  recent(limit: number): Promise<Resolution[]>;
  close(): Promise<void>;
}

/** A pino-like logger (only `warn` is used). */
export interface WarnLogger {
  warn(obj: object, msg?: string): void;
}

export interface LastKnownStoreOptions {
  /** Where skipped (corrupted) records are reported. Default: `process.emitWarning`. */
  logger?: WarnLogger;
}
