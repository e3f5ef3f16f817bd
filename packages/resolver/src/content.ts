import { isDigest } from '@ferry/oci';
import type { Dispatcher } from 'undici';
import type { ContentOutcome, UpstreamOutcome } from './types.ts';

/** The authenticated request path of the upstream client (auth dance included), body unread. */
export type RawExchange = (
  method: 'GET',
  url: string,
  registry: string,
  repository: string,
  signal: AbortSignal,
  extra: Record<string, string>,
) => Promise<Dispatcher.ResponseData | UpstreamOutcome>;

/** Blob storage behind a registry often redirects to another host (a CDN); at most this many hops. */
const MAX_REDIRECTS = 3;

function header(h: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

type Refusal = Exclude<ContentOutcome, { kind: 'content' }>;

function refusal(o: UpstreamOutcome): Refusal {
  return o.kind === 'resolved' ? { kind: 'unavailable', reason: 'unexpected answer' } : o;
}

function statusOutcome(status: number): Refusal {
  if (status === 401 || status === 403) return { kind: 'unauthorized', status };
  if (status === 404) return { kind: 'not-found' };
  return { kind: 'unavailable', reason: `content HTTP ${status}` };
}

/** `bytes <start>-<end>/<total>` → start and total; undefined when malformed. */
function parseContentRange(v: string | undefined): { start: number; total: number } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(v?.trim() ?? '');
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = Number(m[3]);
  if (!Number.isSafeInteger(total) || start > end || end >= total) return undefined;
  return { start, total };
}

/** Closes a response's body, read or not (destroying an unread undici body emits an error: expected). */
function release(res: Dispatcher.ResponseData): void {
  res.body.on('error', () => {});
  res.body.destroy();
}

/** Drops the first `skip` bytes of a body (a registry that ignored our Range answered 200). */
async function* skipping(body: AsyncIterable<Buffer>, skip: number): AsyncGenerator<Buffer> {
  let left = skip;
  for await (const chunk of body) {
    if (left >= chunk.length) {
      left -= chunk.length;
      continue;
    }
    yield left > 0 ? chunk.subarray(left) : chunk;
    left = 0;
  }
}

/**
 * GET a blob or a manifest by digest from the upstream, streaming. `offset` > 0 asks for the rest from
 * there (`Range: bytes=<offset>-`); the body always starts at `offset`, whether the registry honoured the
 * range (206) or not (200, the skipped bytes are read and dropped). Redirects (blob storage) are
 * followed without credentials to another host. `headersSignal` bounds the wait for headers only.
 */
export async function fetchContent(
  exchange: RawExchange,
  open: (
    url: string,
    headers: Record<string, string>,
    signal: AbortSignal,
  ) => Promise<Dispatcher.ResponseData>,
  base: string,
  registry: string,
  repository: string,
  kind: 'blobs' | 'manifests',
  digest: string,
  offset: number,
  signal: AbortSignal,
): Promise<ContentOutcome> {
  if (!isDigest(digest)) return { kind: 'not-found' };
  const extra: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
  let res = await exchange(
    'GET',
    `${base}/v2/${repository}/${kind}/${digest}`,
    registry,
    repository,
    signal,
    extra,
  );
  if ('kind' in res) return refusal(res);
  let from = new URL(`${base}/`);
  for (let hop = 0; res.statusCode >= 300 && res.statusCode < 400; hop++) {
    const location = header(res.headers, 'location');
    await res.body.dump();
    if (location === undefined || hop >= MAX_REDIRECTS) return statusOutcome(res.statusCode);
    let next: URL;
    try {
      next = new URL(location, from);
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new Error('not http(s)');
    } catch {
      return { kind: 'unavailable', reason: 'redirect to an invalid location' };
    }
    // Storage URLs are pre-signed: no registry credentials leave for another host.
    res = await open(next.toString(), extra, signal);
    from = next;
  }
  if (res.statusCode !== 200 && res.statusCode !== 206) {
    await res.body.dump();
    return statusOutcome(res.statusCode);
  }
  const contentType = header(res.headers, 'content-type');
  const mediaType = contentType?.split(';', 1)[0]?.trim();
  let size: number;
  let skip = 0;
  if (res.statusCode === 206) {
    const cr = parseContentRange(header(res.headers, 'content-range'));
    if (cr === undefined || cr.start > offset) {
      release(res);
      return { kind: 'unavailable', reason: 'partial content with a missing or wrong Content-Range' };
    }
    size = cr.total;
    skip = offset - cr.start;
  } else {
    size = Number(header(res.headers, 'content-length'));
    skip = offset;
    if (!Number.isSafeInteger(size) || size < 0) {
      release(res);
      return { kind: 'unavailable', reason: 'content without a Content-Length' };
    }
  }
  const raw = res.body as unknown as AsyncIterable<Buffer>;
  return {
    kind: 'content',
    size,
    offset,
    ...(mediaType ? { mediaType } : {}),
    body: skip > 0 ? skipping(raw, skip) : raw,
    cancel: () => release(res),
  };
}
