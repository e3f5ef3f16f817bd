import { Readable } from 'node:stream';
import { type SpoolEntry, SpoolError } from './spool.ts';

/** `fill` gathers a source's chunks into writes of up to this many bytes… */
const FILL_BYTES = 512 * 1024;
/**
 * …and writes what it holds at the latest this long after the first of them arrived (a slow source's
 * batches are small: with 20 ms, a 256 MiB pull-through at 7 MB/s cost the agent 11.2 CPU-s, with
 * 100 ms 7.4, in the same pull time: every batch is a file write, a wake-up and a socket write per
 * reader)…
 */
const FILL_MS = 100;
/** …or once it holds this many chunks (one vectored write; tiny chunks do not make a huge one). */
const FILL_CHUNKS = 64;
/** A stream's chunks queued for `fill` at most (it is paused beyond). */
const QUEUE_BYTES = 1024 * 1024;

/**
 * Writes a source's body into an entry, gathering its chunks (a socket gives 16-64 KiB at a time)
 * into writes of up to FILL_BYTES (or FILL_CHUNKS chunks), each written at the latest FILL_MS after
 * its first byte arrived: one vectored file write and reader wake-up per batch instead of per chunk,
 * with no copy into one buffer (the hash worker reads the bytes back from the file). Stops early (with
 * what it holds written) when `stop` aborts. Bytes held when the source fails are written before the
 * error is thrown, so a resume with `Range` starts after them.
 */
export async function fill(
  entry: SpoolEntry,
  body: AsyncIterable<Buffer>,
  opts: { onBytes?: (n: number) => void; stop?: AbortSignal } = {},
): Promise<void> {
  const it = (body instanceof Readable ? chunksOf(body) : body)[Symbol.asyncIterator]();
  const held: Buffer[] = [];
  let heldBytes = 0;
  // One timer per batch, not per chunk (a timer per 16-64 KiB chunk, cancelled by an abort, cost an
  // AbortError with its stack each time: seconds of CPU per GiB in a profile of a first pull).
  let deadline: Promise<undefined> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const flush = async () => {
    clearTimeout(timer);
    timer = undefined;
    deadline = undefined;
    if (heldBytes === 0) return;
    const chunks = held.splice(0);
    heldBytes = 0;
    await entry.write(chunks);
  };
  let next: Promise<IteratorResult<Buffer>> | undefined = it.next();
  try {
    for (;;) {
      let r: IteratorResult<Buffer> | undefined;
      if (heldBytes === 0) r = await next;
      else {
        deadline ??= new Promise<undefined>((resolve) => {
          timer = setTimeout(resolve, FILL_MS, undefined);
        });
        r = await Promise.race([next, deadline]);
      }
      if (r === undefined) {
        await flush();
        continue;
      }
      next = undefined;
      if (r.done) break;
      opts.onBytes?.(r.value.length);
      held.push(r.value);
      heldBytes += r.value.length;
      if (heldBytes >= FILL_BYTES || held.length >= FILL_CHUNKS) await flush();
      if (opts.stop?.aborted) break;
      next = it.next();
    }
    await flush();
  } catch (err) {
    if (!(err instanceof SpoolError) && entry.state === 'filling') await flush().catch(() => {});
    throw err;
  } finally {
    clearTimeout(timer);
    next?.catch(() => {});
    await it.return?.().catch(() => {});
  }
}

/**
 * A stream's chunks, each as it came. A Readable's own async iterator reads with `read()`, which
 * hands out every chunk waiting as one new buffer (a copy, and garbage) whenever several are waiting,
 * as they are when the event loop is busy. At most QUEUE_BYTES wait here; the stream is paused beyond.
 */
async function* chunksOf(r: Readable): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let queued = 0;
  let ended = false;
  let error: Error | undefined;
  let wake: (() => void) | undefined;
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (c: Buffer) => {
    queue.push(c);
    queued += c.length;
    if (queued >= QUEUE_BYTES) r.pause();
    poke();
  };
  const onEnd = () => {
    ended = true;
    poke();
  };
  const onError = (err: Error) => {
    error ??= err;
    poke();
  };
  const onClose = () => {
    if (!ended) error ??= new Error('body closed before its end');
    poke();
  };
  r.on('data', onData);
  r.once('end', onEnd);
  r.once('error', onError);
  r.once('close', onClose);
  try {
    for (let head = 0; ; ) {
      if (head < queue.length) {
        const c = queue[head] as Buffer;
        head++;
        queued -= c.length;
        if (head === queue.length) {
          queue.length = 0;
          head = 0;
        }
        if (r.isPaused() && queued < QUEUE_BYTES / 2) r.resume();
        yield c;
        continue;
      }
      if (error !== undefined) throw error;
      if (ended) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    r.off('data', onData);
    r.off('end', onEnd);
    r.off('error', onError);
    r.off('close', onClose);
  }
}
