import { createHash } from 'node:crypto';
import {
  abortable,
  baseMediaType,
  endpointsOf,
  firstHeader,
  isDigest,
  isValidRepository,
  isValidTag,
  manifestAcceptTypes,
  normalizeRegistry,
  registryEndpoint,
} from '@ferry/oci';
import { Agent, type Dispatcher, request } from 'undici';
import { parseChallenge } from './challenge.ts';
import { fetchContent } from './content.ts';
import { type Credential, decodeDockerConfig } from './credentials.ts';
import { createOutboundPolicy } from './outbound.ts';
import type { ContentOutcome, UpstreamClient, UpstreamClientOptions, UpstreamOutcome } from './types.ts';

const DEFAULT_TIMEOUT_MS = 1000;
/** Distribution refuses manifests above 4 MiB; so do we when hashing a GET body. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const DEFAULT_TOKEN_LIFETIME_S = 60;
const ACCEPT = manifestAcceptTypes.join(', ');
const USER_AGENT = 'ferry-resolver';

interface Auth {
  header: string;
  /** Token cache key when `header` is a cached bearer token. */
  tokenKey?: string;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

type TokenResult = { token: string; lifetimeMs: number } | UpstreamOutcome;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Only for GET 2xx. */
  body?: Buffer;
}

async function buffered(method: string, res: Dispatcher.ResponseData): Promise<Reply> {
  if (method === 'HEAD' || res.statusCode < 200 || res.statusCode >= 300) {
    await res.body.dump();
    return { status: res.statusCode, headers: res.headers };
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res.body) {
    n += (chunk as Buffer).length;
    if (n > MAX_MANIFEST_BYTES) {
      res.body.destroy();
      throw new Error(`response larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) };
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

/** The default base URL of a registry host (@ferry/oci's `registryEndpoint`). */
export const defaultEndpoint = (registry: string): string => registryEndpoint(registry);

/**
 * Builds an `endpoints` map from registry base URLs (as given to `--mirrored-registries`):
 * `http://127.0.0.2:5000` → `{ '127.0.0.2:5000': 'http://127.0.0.2:5000' }` (@ferry/oci's `endpointsOf`).
 */
export const endpointsFromUrls = (urls: string[]): Record<string, string> => endpointsOf(urls);

/** The text clients see for any network failure (refused, reset, timeout, TLS, DNS: all alike). */
export const UNREACHABLE = 'upstream unreachable';

/** An `unavailable` outcome for a failed request: a client-safe reason, the cause for logs. */
function failure(
  err: unknown,
  deadline: AbortSignal,
  caller: AbortSignal | undefined,
  timeoutMs: number,
): UpstreamOutcome {
  if (caller?.aborted) return { kind: 'unavailable', reason: 'aborted by caller' };
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.code === REFUSED_CODE) return { kind: 'unavailable', reason: e.message ?? 'not allowed' };
  const code = e?.code ?? e?.cause?.code;
  const detail = deadline.aborted
    ? `timeout after ${timeoutMs} ms`
    : `${code ? `${code}: ` : ''}${e?.cause?.message ?? e?.message ?? String(err)}`.slice(0, 200);
  return { kind: 'unavailable', reason: UNREACHABLE, detail };
}

const REFUSED_CODE = 'ERR_FERRY_OUTBOUND_REFUSED';

/** Thrown by `open` for a URL the outbound policy refuses (no connection is made). */
function refused(why: string): Error {
  return Object.assign(new Error(`outbound request refused: ${why}`), { code: REFUSED_CODE });
}

function statusOutcome(status: number, what: string): UpstreamOutcome {
  if (status === 401 || status === 403) return { kind: 'unauthorized', status };
  if (status === 404) return { kind: 'not-found' };
  if (status === 429 || status >= 500) return { kind: 'unavailable', reason: `${what} HTTP ${status}` };
  return { kind: 'unavailable', reason: `${what} unexpected HTTP ${status}` };
}

/**
 * Creates the upstream tag resolver. One client per process: it holds the token cache and (unless a
 * dispatcher is given) its own connection pool.
 */
export function createUpstreamClient(opts: UpstreamClientOptions = {}): UpstreamClient {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const credentials = decodeDockerConfig(opts.credentials ?? {});
  const endpoints = new Map<string, string>();
  for (const [host, url] of Object.entries(opts.endpoints ?? {})) {
    endpoints.set(normalizeRegistry(host), url.replace(/\/+$/, ''));
  }
  const policy = createOutboundPolicy({
    mirroredRegistries: opts.mirroredRegistries ?? [],
    endpoints: Object.fromEntries(endpoints),
    ...(opts.lookup ? { lookup: opts.lookup } : {}),
  });
  const ownDispatcher = opts.dispatcher === undefined;
  const dispatcher: Dispatcher =
    opts.dispatcher ??
    new Agent({ keepAliveTimeout: 30_000, connections: 16, connect: { lookup: policy.connectLookup } });

  /** (registry, scope) -> token. */
  const tokens = new Map<string, CachedToken>();
  /** In-flight token fetches, shared by concurrent resolutions. */
  const fetching = new Map<string, Promise<TokenResult>>();
  /** registry/repo -> scope the registry asked for last time (to pre-attach a cached token). */
  const scopes = new Map<string, string>();
  /** Registries that asked for Basic auth (pre-attached when we have credentials). */
  const basicRegistries = new Set<string>();

  const tokenKey = (registry: string, scope: string) => `${registry} ${scope}`;

  /** One HTTP request; the body is left unread (the caller consumes or dumps it). */
  function open(
    method: 'HEAD' | 'GET' | 'POST',
    url: string,
    headers: Record<string, string>,
    signal: AbortSignal,
    body?: string,
  ): Promise<Dispatcher.ResponseData> {
    const why = URL.canParse(url) ? policy.checkUrl(new URL(url)) : 'not a URL';
    if (why !== undefined) return Promise.reject(refused(why));
    return request(url, {
      method,
      headers: { 'user-agent': USER_AGENT, ...headers },
      signal,
      dispatcher,
      ...(body === undefined ? {} : { body }),
    });
  }

  /** One request; a GET 2xx body is read whole (bounded), every other body dumped. */
  async function send(
    method: 'HEAD' | 'GET' | 'POST',
    url: string,
    headers: Record<string, string>,
    signal: AbortSignal,
    body?: string,
  ): Promise<Reply> {
    const res = await open(method, url, headers, signal, body);
    return buffered(method, res);
  }

  function cachedAuth(registry: string, repository: string): Auth | undefined {
    const cred = credentials.get(registry);
    if (cred?.kind === 'registry') return { header: `Bearer ${cred.token}` };
    const scope = scopes.get(`${registry}/${repository}`) ?? `repository:${repository}:pull`;
    const key = tokenKey(registry, scope);
    const t = tokens.get(key);
    if (t && t.expiresAt > Date.now()) return { header: `Bearer ${t.token}`, tokenKey: key };
    if (t) tokens.delete(key);
    if (cred?.kind === 'basic' && basicRegistries.has(registry)) {
      return { header: basic(cred.username, cred.password) };
    }
    return undefined;
  }

  async function fetchToken(
    cred: Credential | undefined,
    realm: string,
    service: string | undefined,
    scope: string | undefined,
    signal: AbortSignal,
  ): Promise<TokenResult> {
    let url: URL;
    try {
      url = new URL(realm);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error('not http(s)');
    } catch {
      return { kind: 'unavailable', reason: 'bad token realm' };
    }
    const why = policy.checkRealm(url);
    if (why !== undefined) return { kind: 'unavailable', reason: `token realm refused: ${why}` };
    let reply: Reply;
    if (cred?.kind === 'identity') {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: cred.refreshToken,
        client_id: USER_AGENT,
      });
      if (service) form.set('service', service);
      if (scope) form.set('scope', scope);
      reply = await send(
        'POST',
        url.toString(),
        { 'content-type': 'application/x-www-form-urlencoded' },
        signal,
        form.toString(),
      );
    } else {
      if (service) url.searchParams.set('service', service);
      if (scope) url.searchParams.set('scope', scope);
      if (cred?.kind === 'basic') url.searchParams.set('account', cred.username);
      const headers: Record<string, string> = {};
      if (cred?.kind === 'basic') headers.authorization = basic(cred.username, cred.password);
      reply = await send('GET', url.toString(), headers, signal);
    }
    if (reply.status < 200 || reply.status >= 300) return statusOutcome(reply.status, 'token endpoint');
    let json: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      json = JSON.parse(reply.body?.toString('utf8') ?? '');
    } catch {
      return { kind: 'unavailable', reason: 'token endpoint answered invalid JSON' };
    }
    const token = typeof json.token === 'string' && json.token ? json.token : json.access_token;
    if (typeof token !== 'string' || token === '') {
      return { kind: 'unavailable', reason: 'token endpoint answered without a token' };
    }
    const expiresIn =
      typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    return { token, lifetimeMs: expiresIn * 1000 };
  }

  /** Answers a 401 challenge: a new Authorization header, or the outcome to return. */
  async function authorize(
    registry: string,
    repository: string,
    wwwAuthenticate: string | undefined,
    refused: Auth | undefined,
    signal: AbortSignal,
  ): Promise<Auth | UpstreamOutcome> {
    const ch = parseChallenge(wwwAuthenticate);
    const cred = credentials.get(registry);
    if (ch?.scheme === 'basic') {
      if (cred?.kind !== 'basic') return { kind: 'unauthorized', status: 401 };
      basicRegistries.add(registry);
      return { header: basic(cred.username, cred.password) };
    }
    if (ch?.scheme !== 'bearer' || !ch.params.realm) return { kind: 'unauthorized', status: 401 };
    if (cred?.kind === 'registry') return { kind: 'unauthorized', status: 401 }; // the token was refused
    const scope = ch.params.scope ?? `repository:${repository}:pull`;
    scopes.set(`${registry}/${repository}`, scope);
    const key = tokenKey(registry, scope);
    // A concurrent resolution may have fetched a token since this request went out.
    const cached = tokens.get(key);
    if (cached && cached.expiresAt > Date.now() && `Bearer ${cached.token}` !== refused?.header) {
      return { header: `Bearer ${cached.token}`, tokenKey: key };
    }
    let p = fetching.get(key);
    if (!p) {
      // The shared fetch has its own deadline (not one caller's signal); each caller waits with its own.
      p = fetchToken(
        cred,
        ch.params.realm,
        ch.params.service,
        ch.params.scope,
        AbortSignal.timeout(timeoutMs),
      )
        .then((r) => {
          if ('token' in r) {
            const margin = Math.min(10_000, r.lifetimeMs / 10);
            tokens.set(key, { token: r.token, expiresAt: Date.now() + r.lifetimeMs - margin });
          }
          return r;
        })
        .finally(() => fetching.delete(key));
      fetching.set(key, p);
      p.catch(() => {}); // a rejection is seen by the waiters; never unhandled
    }
    const r = await abortable(p, signal);
    if ('token' in r) return { header: `Bearer ${r.token}`, tokenKey: key };
    return r;
  }

  /**
   * One request with the auth dance: pre-attached auth, on 401 authorize and retry once. The final
   * response's body is unread (`ReplyOf` = the raw response) so blob bodies can stream.
   */
  async function exchangeRaw(
    method: 'HEAD' | 'GET',
    url: string,
    registry: string,
    repository: string,
    signal: AbortSignal,
    extra: Record<string, string> = {},
  ): Promise<Dispatcher.ResponseData | UpstreamOutcome> {
    let auth = cachedAuth(registry, repository);
    const headers = (a: Auth | undefined): Record<string, string> =>
      a ? { accept: ACCEPT, ...extra, authorization: a.header } : { accept: ACCEPT, ...extra };
    let res = await open(method, url, headers(auth), signal);
    if (res.statusCode !== 401) return res;
    await res.body.dump();
    if (auth?.tokenKey) tokens.delete(auth.tokenKey);
    const next = await authorize(
      registry,
      repository,
      firstHeader(res.headers['www-authenticate']),
      auth,
      signal,
    );
    if ('kind' in next) return next;
    auth = next;
    res = await open(method, url, headers(auth), signal);
    if ((res.statusCode === 401 || res.statusCode === 403) && auth.tokenKey) tokens.delete(auth.tokenKey);
    return res;
  }

  /** {@link exchangeRaw} with the body read (manifests, bounded) or dumped. */
  async function exchange(
    method: 'HEAD' | 'GET',
    url: string,
    registry: string,
    repository: string,
    signal: AbortSignal,
  ): Promise<Reply | UpstreamOutcome> {
    const res = await exchangeRaw(method, url, registry, repository, signal);
    if ('kind' in res) return res;
    return buffered(method, res);
  }

  async function resolve(
    registry: string,
    repository: string,
    tag: string,
    signal: AbortSignal,
  ): Promise<UpstreamOutcome> {
    const base = endpoints.get(registry) ?? defaultEndpoint(registry);
    const url = `${base}/v2/${repository}/manifests/${encodeURIComponent(tag)}`;
    let reply = await exchange('HEAD', url, registry, repository, signal);
    if ('kind' in reply) return reply;
    const headDigest = firstHeader(reply.headers['docker-content-digest']);
    const ok = reply.status >= 200 && reply.status < 300;
    if (reply.status === 405 || (ok && !(headDigest && isDigest(headDigest)))) {
      reply = await exchange('GET', url, registry, repository, signal);
      if ('kind' in reply) return reply;
      if (reply.status < 200 || reply.status >= 300) return statusOutcome(reply.status, 'manifest');
      const body = reply.body ?? Buffer.alloc(0);
      const contentType = firstHeader(reply.headers['content-type']);
      return {
        kind: 'resolved',
        digest: `sha256:${createHash('sha256').update(body).digest('hex')}`,
        size: body.length,
        ...(contentType ? { mediaType: baseMediaType(contentType) } : {}),
      };
    }
    if (!ok) return statusOutcome(reply.status, 'manifest');
    const contentType = firstHeader(reply.headers['content-type']);
    const length = Number(firstHeader(reply.headers['content-length']));
    return {
      kind: 'resolved',
      digest: headDigest as string,
      ...(contentType ? { mediaType: baseMediaType(contentType) } : {}),
      ...(Number.isSafeInteger(length) && length > 0 ? { size: length } : {}),
    };
  }

  return {
    async resolveTag(registry, repository, tag, callOpts = {}) {
      const reg = normalizeRegistry(registry);
      if (!isValidRepository(repository) || !isValidTag(tag)) return { kind: 'not-found' };
      const why = policy.checkRegistry(reg);
      if (why !== undefined) return { kind: 'unavailable', reason: why };
      const deadline = AbortSignal.timeout(timeoutMs);
      const signal = callOpts.signal ? AbortSignal.any([deadline, callOpts.signal]) : deadline;
      try {
        return await resolve(reg, repository, tag, signal);
      } catch (err) {
        return failure(err, deadline, callOpts.signal, timeoutMs);
      }
    },
    async fetchContent(registry, repository, kind, digest, callOpts = {}) {
      const reg = normalizeRegistry(registry);
      if (!isValidRepository(repository)) return { kind: 'not-found' };
      const why = policy.checkRegistry(reg);
      if (why !== undefined) return { kind: 'unavailable', reason: why };
      const base = endpoints.get(reg) ?? defaultEndpoint(reg);
      // The deadline bounds the headers; the body follows the caller's signal only.
      const headers = new AbortController();
      const timer = setTimeout(() => headers.abort(new Error(`timeout after ${timeoutMs} ms`)), timeoutMs);
      const signal = callOpts.signal ? AbortSignal.any([headers.signal, callOpts.signal]) : headers.signal;
      try {
        return await fetchContent(
          (method, url, r, repo, s, extra) => exchangeRaw(method, url, r, repo, s, extra),
          (url, h, s) => open('GET', url, h, s),
          base,
          reg,
          repository,
          kind,
          digest,
          Math.max(0, callOpts.offset ?? 0),
          signal,
        );
      } catch (err) {
        return failure(err, headers.signal, callOpts.signal, timeoutMs) as ContentOutcome;
      } finally {
        clearTimeout(timer);
      }
    },
    hasCredentials(registry) {
      return credentials.has(normalizeRegistry(registry));
    },
    async close() {
      tokens.clear();
      if (ownDispatcher) await dispatcher.close();
    },
  };
}
