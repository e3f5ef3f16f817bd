import { shorten } from './digest.ts';
import { OciError } from './errors.ts';

/** A byte range with an inclusive end. */
export interface ByteRange {
  start: number;
  end: number;
}

const RANGE_RE = /^bytes[ \t]*=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)$/i;

function bad(header: string, size: number, why: string): OciError {
  return new OciError('RANGE_INVALID', `${why}: ${JSON.stringify(shorten(header))}`, undefined, {
    range: shorten(header),
    size,
  });
}

/**
 * Parses a single-range `Range` header against a resource of `size` bytes: 'bytes=a-b',
 * 'bytes=a-', 'bytes=-n' (last n bytes). `undefined` -> undefined (no range). Anything else,
 * multi-ranges, a > b, 'bytes=-0', or start >= size -> OciError RANGE_INVALID (416, detail
 * `{ range, size }`). The end is clipped to size-1.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  if (!Number.isSafeInteger(size) || size < 0)
    throw new TypeError(`size must be a non-negative integer, got ${size}`);
  const h = header.trim();
  if (h.includes(',')) throw bad(header, size, 'multiple ranges are not supported');
  const m = RANGE_RE.exec(h);
  if (!m) throw bad(header, size, 'malformed Range header');
  const [, first = '', last = ''] = m;
  let start: number;
  let end: number;
  if (first === '' && last === '') throw bad(header, size, 'malformed Range header');
  if (first === '') {
    const n = Number(last);
    if (n === 0) throw bad(header, size, 'empty suffix range');
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(first);
    end = last === '' ? size - 1 : Number(last);
    if (end < start) throw bad(header, size, 'range end before start');
  }
  if (start >= size) throw bad(header, size, `range not satisfiable for ${size} bytes`);
  return { start, end: Math.min(end, size - 1) };
}

/** The `Content-Range` value of a range: 'bytes a-b/size'. */
export function contentRange(r: ByteRange, size: number): string {
  return `bytes ${r.start}-${r.end}/${size}`;
}

/** The `Content-Range` value that goes with a 416 answer: 'bytes *\/size'. */
export function unsatisfiedContentRange(size: number): string {
  return `bytes */${size}`;
}
