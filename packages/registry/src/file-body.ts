/**
 * The blob path's body writer: a byte range of an open file, read into recycled 1 MiB buffers and
 * written to the response. A read stream allocates a fresh buffer for every chunk, and on the agent's
 * heap the garbage collections that this external memory sets off held a 1 GiB transfer to ~400 MB/s on
 * the 2-core rig; reusing a few buffers took the same transfer to ~1.7–2.4 GB/s (curl as the client).
 *
 * A buffer goes back to the pool only from the write's callback, when the socket has taken its bytes.
 * A client that stops reading keeps its response's buffers: all responses together hold at most
 * LENT_MAX pooled 1 MiB buffers, and beyond that a response reads into small fresh buffers, so 300
 * stalled readers cost ~130 MiB instead of 600 MiB, and memory stays bounded by the connection cap.
 *
 * When such a burst is over (no body written for RELEASE_IDLE_MS, after RELEASE_AFTER_BYTES of fresh
 * buffers), the idle pool is dropped and one full collection runs, so the memory goes back to the
 * system instead of staying with an agent that allocates nothing until the next request.
 */
import type { ServerResponse } from 'node:http';
import { collectGarbage } from './collect.ts';
import type { BodyFile } from './types.ts';

const CHUNK_BYTES = 1 << 20;
/** Buffers written and not yet flushed, per response: one on the wire while the next is read. */
const IN_FLIGHT = 2;
/** Idle buffers kept for the next responses (at most 32 MiB). */
const POOL_MAX = 32;
const pool: Buffer[] = [];
/** 1 MiB buffers out of the pool at once, over all responses (64 MiB). */
const LENT_MAX = 64;
/**
 * The buffer size once LENT_MAX is reached: 128 KiB, the size from which glibc maps each buffer on its
 * own (the chart's MALLOC_MMAP_THRESHOLD_), so a burst's buffers go back to the system when freed
 * instead of staying in malloc's heap.
 */
const SMALL_BYTES = 128 << 10;
let lent = 0;
/** Quiet time after the last body before memory is released. */
const RELEASE_IDLE_MS = 2_000;
/** Fresh buffer bytes since the last release that make it worth a collection (a burst, not a pull). */
const RELEASE_AFTER_BYTES = 32 << 20;
let fresh = 0;
let writers = 0;
let releaseTimer: NodeJS.Timeout | undefined;

function alloc(size: number): Buffer {
  fresh += size;
  return Buffer.allocUnsafeSlow(size);
}

function take(): Buffer {
  if (lent >= LENT_MAX) return alloc(SMALL_BYTES);
  lent++;
  return pool.pop() ?? alloc(CHUNK_BYTES);
}

/** After the last body of a burst: release its memory once nothing was written for a while. */
function bodyDone(): void {
  writers--;
  if (writers > 0 || fresh < RELEASE_AFTER_BYTES) return;
  clearTimeout(releaseTimer);
  releaseTimer = setTimeout(() => {
    releaseTimer = undefined;
    if (writers > 0) return;
    pool.length = 0;
    fresh = 0;
    collectGarbage();
  }, RELEASE_IDLE_MS);
  releaseTimer.unref();
}

/** Returns `buf`; `reuse` false when the socket may still hold it (after a write error). */
function give(buf: Buffer, reuse = true): void {
  if (buf.length !== CHUNK_BYTES) return;
  lent--;
  if (reuse && pool.length < POOL_MAX) pool.push(buf);
}

/**
 * Writes bytes `start..end` (inclusive) of `file` to `res` (its head already written) and ends it.
 * Stops quietly when `signal` aborts (the client went away). Rejects when the file cannot be read or
 * is shorter than the range; the caller must then destroy the response (its Content-Length is a promise
 * that cannot be kept). A file still growing (`readableUpTo`, a spool entry) is read as its bytes
 * become readable. Never closes `file`.
 */
export async function writeFileBody(
  res: ServerResponse,
  file: BodyFile,
  start: number,
  end: number,
  signal: AbortSignal,
  onBytes: (n: number) => void,
): Promise<void> {
  let inflight = 0;
  let failed: Error | undefined;
  let wake: (() => void) | undefined;
  const wakeUp = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  signal.addEventListener('abort', wakeUp, { once: true });
  writers++;
  try {
    let pos = start;
    /** End (exclusive) of the bytes known to be readable. */
    let readable = file.readableUpTo === undefined ? end + 1 : 0;
    while (pos <= end) {
      if (pos >= readable && file.readableUpTo !== undefined) {
        try {
          readable = await file.readableUpTo(pos, signal);
        } catch (err) {
          if (signal.aborted || res.destroyed) return;
          throw err;
        }
      }
      while (inflight >= IN_FLIGHT && !signal.aborted && failed === undefined) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
      if (signal.aborted || res.destroyed) return;
      if (failed !== undefined) throw failed;
      const buf = take();
      let bytesRead: number;
      try {
        ({ bytesRead } = await file.read(
          buf,
          0,
          Math.min(buf.length, Math.min(end + 1, readable) - pos),
          pos,
        ));
      } catch (err) {
        give(buf);
        throw err;
      }
      if (bytesRead === 0) {
        give(buf);
        throw new Error(`content file ends at byte ${pos}, before the ${end + 1} bytes announced`);
      }
      if (signal.aborted || res.destroyed) {
        give(buf);
        return;
      }
      inflight++;
      res.write(buf.subarray(0, bytesRead), (err) => {
        inflight--;
        if (err) failed ??= err;
        give(buf, !err); // after an error the socket may still hold it: let the GC have it
        wakeUp();
      });
      onBytes(bytesRead);
      pos += bytesRead;
    }
    // End only once the socket has taken every byte: an ended response counts as finished, and a
    // draining server closes "idle" connections whose response is finished, dropping what was unsent.
    while (inflight > 0 && !signal.aborted && failed === undefined) {
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    if (signal.aborted || res.destroyed) return;
    if (failed !== undefined) throw failed;
    res.end();
  } finally {
    signal.removeEventListener('abort', wakeUp);
    bodyDone();
  }
}
