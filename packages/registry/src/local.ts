import type { OutgoingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import {
  type ByteRange,
  type DistributionRequest,
  fingerprintMediaType,
  isManifestMediaType,
  parseRange,
} from '@ferry/oci';
import type { FastifyReply } from 'fastify';
import { writeFileBody } from './file-body.ts';
import type { ContentInfo, ContentSource } from './types.ts';

/** How serving from local content went; `held: false` = not here (nothing was sent). */
export type LocalResult =
  | { held: false }
  | { held: true; sent: FastifyReply | undefined }
  | { held: true; error: { status: 404 | 416; code: 'MANIFEST_UNKNOWN' | 'RANGE_INVALID'; message: string } };

/** Per-request hooks of the local server. */
export interface LocalServe {
  range: string | undefined;
  head: boolean;
  signal: AbortSignal;
  /** Called once the content is known to be held, before anything is sent (may add headers). */
  onHeld(status: number, headers: Record<string, string>): Promise<void>;
  onBytes(n: number): void;
  onBodyError(err: Error): void;
}

async function readAll(stream: NodeJS.ReadableStream, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += b.length;
    if (size > limit) {
      (stream as Readable).destroy?.();
      throw new Error(`content larger than ${limit} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

async function* counted(
  source: AsyncIterable<Buffer | string>,
  onBytes: (n: number) => void,
  onEnd: () => void,
): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of source) {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      onBytes(b.length);
      yield b;
    }
  } finally {
    onEnd();
  }
}

/** Serves manifests and blobs the node holds (see the package README, "Local"). */
export function createLocalServer(
  source: ContentSource,
  maxManifestBytes: number,
  onManifest: (bytes: Buffer, mediaType: string) => void = () => {},
) {
  const fingerprints = new Map<string, string | undefined>();

  /** Media type of local content, fingerprinting small content without one. Returns the bytes when read. */
  const mediaTypeOf = async (info: ContentInfo): Promise<{ mediaType?: string; bytes?: Buffer }> => {
    if (info.mediaType !== undefined) return { mediaType: info.mediaType };
    if (fingerprints.has(info.digest)) {
      const mt = fingerprints.get(info.digest);
      return mt === undefined ? {} : { mediaType: mt };
    }
    if (info.size > maxManifestBytes) return {};
    const bytes = await readAll(await source.open(info.digest), maxManifestBytes);
    const mt = fingerprintMediaType(bytes);
    if (fingerprints.size >= 256) fingerprints.delete(fingerprints.keys().next().value as string);
    fingerprints.set(info.digest, mt);
    return mt === undefined ? { bytes } : { mediaType: mt, bytes };
  };

  /** Writes a blob body straight from the content file (recycled buffers, `file-body.ts`). */
  const sendFile = async (
    reply: FastifyReply,
    info: ContentInfo,
    range: ByteRange | undefined,
    s: LocalServe,
  ): Promise<boolean> => {
    const file = source.openFile === undefined ? undefined : await source.openFile(info.digest);
    if (file === undefined) return false;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
    try {
      await writeFileBody(res, file, range?.start ?? 0, range?.end ?? info.size - 1, s.signal, s.onBytes);
    } catch (err) {
      s.onBodyError(err as Error);
      res.destroy(err as Error);
    } finally {
      await file.close().catch(() => {});
    }
    return true;
  };

  return {
    /** Serves `d` when held; throws when the source fails (the caller decides what that means). */
    async serve(reply: FastifyReply, d: DistributionRequest, s: LocalServe): Promise<LocalResult> {
      const info =
        d.tag !== undefined
          ? await source.resolveTag(d.registry, d.repository, d.tag)
          : await source.stat(d.digest as string);
      if (info === undefined) return { held: false };
      let mediaType = info.mediaType ?? 'application/octet-stream';
      let bytes: Buffer | undefined;
      let range: ByteRange | undefined;
      if (d.kind === 'manifests') {
        const m = await mediaTypeOf(info);
        bytes = m.bytes;
        if (m.mediaType === undefined || !isManifestMediaType(m.mediaType))
          return {
            held: true,
            error: { status: 404, code: 'MANIFEST_UNKNOWN', message: `${info.digest} is not a manifest` },
          };
        mediaType = m.mediaType;
        if (bytes !== undefined) onManifest(bytes, mediaType);
      } else {
        try {
          range = parseRange(s.range, info.size);
        } catch (err) {
          reply.header('content-range', `bytes */${info.size}`);
          return {
            held: true,
            error: { status: 416, code: 'RANGE_INVALID', message: (err as Error).message },
          };
        }
      }
      const headers: Record<string, string> = {
        'content-type': mediaType,
        'docker-content-digest': info.digest,
        etag: `"${info.digest}"`,
        'content-length': String(range === undefined ? info.size : range.end - range.start + 1),
      };
      if (d.kind === 'blobs') headers['accept-ranges'] = 'bytes';
      if (range !== undefined) headers['content-range'] = `bytes ${range.start}-${range.end}/${info.size}`;
      const status = range === undefined ? 200 : 206;
      await s.onHeld(status, headers);
      if (s.head) return { held: true, sent: reply.code(status).headers(headers).send() };
      if (bytes !== undefined && range === undefined) {
        s.onBytes(bytes.length);
        return { held: true, sent: reply.code(status).headers(headers).send(bytes) };
      }
      if (info.size === 0)
        return { held: true, sent: reply.code(status).headers(headers).send(Buffer.alloc(0)) };
      reply.code(status).headers(headers);
      if (await sendFile(reply, info, range, s)) return { held: true, sent: undefined };
      const stream = await source.open(info.digest, range).catch((err: unknown) => {
        if (s.signal.aborted) throw err;
        return undefined;
      });
      if (stream === undefined) {
        // Gone between stat and open (GC): not held after all.
        for (const name of Object.keys(headers)) reply.removeHeader(name);
        reply.code(200);
        return { held: false };
      }
      const destroy = () => (stream as Readable).destroy?.();
      s.signal.addEventListener('abort', destroy, { once: true });
      const body = Readable.from(
        counted(stream as AsyncIterable<Buffer>, s.onBytes, () => {
          s.signal.removeEventListener('abort', destroy);
          destroy();
        }),
        { objectMode: false },
      );
      return { held: true, sent: reply.send(body) };
    },
  };
}
