import type {
  ContentOutcome,
  ContentUpstream,
  TagResolution as Resolution,
  TagUpstream,
  UpstreamOutcome,
} from '@ferry/interface';
import type { Dispatcher } from 'undici';
import type { LookupAll } from './outbound.ts';

/** A tag resolution and the upstream's outcome are shared contracts (@ferry/interface). */
export type { ContentOutcome, Resolution, UpstreamOutcome };

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
  /**
   * Registries this node mirrors (hosts or URLs, as `--mirrored-registries`); empty: all public
   * registries. Drives the outbound rules (outbound.ts): no request reaches any other host.
   */
  mirroredRegistries?: readonly string[];
  /** DNS for the outbound address checks (tests). Default dns.lookup. */
  lookup?: LookupAll;
  /** undici dispatcher (tests; the outbound address check at connect time is then the dispatcher's). Default: an Agent owned and closed by the client. */
  dispatcher?: Dispatcher;
}

/** The upstream client: tag resolution and content by digest (the contracts are @ferry/interface's). */
export interface UpstreamClient extends TagUpstream, ContentUpstream {
  close(): Promise<void>;
}

/**
 * The last-known store: per tag, the newest digest this node may serve during an outage. Its rules
 * (see store-rules.ts), the same for every implementation:
 * - An upstream answer (`source: 'upstream'`) is always recorded: it replaces any peer-learned record
 *   and an older upstream record; it is never refused, whatever time a record claims.
 * - A peer answer (`source: 'peer'`) is evidence: never recorded over this node's own upstream record,
 *   nor when its time is in the future or missing, nor over a newer peer record.
 * - A peer-learned record lasts only for the outage it was learned in: once the upstream of that
 *   registry answered again (any tag), `get` no longer returns it (and it is dropped).
 * - At most `maxEntries` records; the oldest (by resolvedAt) go first.
 */
export interface LastKnownStore {
  /**
   * Applies the rules above; true when the record was stored. Durable before it resolves (sync write):
   * a kill -9 after it resolves loses nothing. Throws TypeError for a malformed resolution or a source
   * other than 'upstream' and 'peer'.
   */
  record(r: Resolution): Promise<boolean>;
  /** The record for a tag, unless it is a peer-learned one the upstream has answered since. */
  get(registry: string, repository: string, tag: string): Promise<Resolution | undefined>;
  /** Notes that the upstream of `registry` answered (e.g. "not found"): ends its peer-learned records. */
  upstreamAnswered(registry: string): Promise<void>;
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
  /** Most records kept; the oldest are evicted. Default 10,000. */
  maxEntries?: number;
  /** Clock (tests). Default Date.now. */
  now?: () => number;
}
