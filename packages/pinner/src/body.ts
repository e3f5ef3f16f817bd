/**
 * Bounds on what the pinner reads: the body size (the rest of a too-large body is read and dropped, up
 * to a hard cap, so the client gets its 413 instead of a reset connection) and the JSON nesting depth
 * (checked on the text before parsing, so no deep structure reaches a recursive walk).
 */
import type { Readable } from 'node:stream';

/** A problem with a request body; `status` 413 or 400; the message never quotes the body. */
export class BodyError extends Error {
  readonly status: 400 | 413;
  constructor(status: 400 | 413, message: string) {
    super(message);
    this.status = status;
  }
}

/**
 * Reads a body of at most `limit` bytes. A longer one is drained (not kept) up to `drainLimit` bytes and
 * rejected with 413; past `drainLimit` the stream is destroyed.
 */
export function readBoundedBody(stream: Readable, limit: number, drainLimit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let seen = 0;
    const tooLarge = () => new BodyError(413, `body too large: at most ${limit} bytes`);
    stream.on('data', (chunk: Buffer) => {
      seen += chunk.length;
      if (seen <= limit) chunks.push(chunk);
      else if (chunks.length > 0) chunks.length = 0; // over the limit: stop keeping anything
      if (seen > drainLimit) {
        stream.destroy();
        reject(tooLarge());
      }
    });
    stream.once('end', () => {
      if (seen > limit) reject(tooLarge());
      else resolve(Buffer.concat(chunks).toString('utf8'));
    });
    stream.once('error', (err) => reject(new BodyError(400, `body could not be read (${err.name})`)));
  });
}

/** True when the JSON text nests arrays/objects deeper than `max` (strings are skipped). */
export function jsonDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > max) return true;
    } else if (c === 125 /* } */ || c === 93 /* ] */) depth--;
  }
  return false;
}
