import { type FileHandle, mkdir, open, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDigest } from '@ferry/oci';
import { type FileHasher, HashWorker } from './hasher.ts';
import type { BodyFile } from './types.ts';

/** Largest chunk handed to a reader at once. */
const READ_CHUNK = 1024 * 1024;

/** Why an entry could not be kept. */
export class SpoolError extends Error {
  override name = 'SpoolError';
}

export interface SpoolOptions {
  /** Directory of the spool files (created, emptied at start). */
  dir: string;
  /** Total bytes the entries may reserve together. */
  maxBytes: number;
  /** Most entries at once (default 256). */
  maxEntries?: number;
  /** Free bytes the file system must keep beyond a new entry (default 64 MiB). */
  reserveBytes?: number;
  /** Free bytes of the spool's file system (injectable for tests). Default: statfs. */
  freeBytes?: (dir: string) => Promise<number>;
}

export type SpoolState = 'pending' | 'filling' | 'complete' | 'failed';

/**
 * One in-flight digest: a file that grows as bytes arrive, readable (whole or by range) while it
 * grows, hashed as it is written. The final byte is readable only once the digest is verified.
 */
export class SpoolEntry {
  readonly digest: string;
  size: number | undefined;
  mediaType: string | undefined;
  written = 0;
  state: SpoolState = 'pending';
  error: Error | undefined;
  /** Readers currently streaming from the entry. */
  readers = 0;
  readonly created = Date.now();
  private readonly hash: FileHasher;
  private readonly expected: string;
  private readonly algorithm: string;
  private wake: PromiseWithResolvers<void> = Promise.withResolvers();
  private removed = false;

  private readonly file: FileHandle;
  readonly path: string;
  private readonly spool: Spool;

  constructor(digest: string, file: FileHandle, path: string, spool: Spool) {
    this.digest = digest;
    this.file = file;
    this.path = path;
    this.spool = spool;
    const { algorithm, hex } = parseDigest(digest);
    this.hash = spool.hasher(algorithm, path);
    this.algorithm = algorithm;
    this.expected = hex;
  }

  /** Bytes a reader may see: everything once verified, otherwise all but the last byte. */
  private readable(): number {
    if (this.state === 'complete') return this.size as number;
    if (this.size === undefined) return 0;
    return Math.min(this.written, this.size - 1);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = Promise.withResolvers();
    w.resolve();
  }

  private async changed(signal?: AbortSignal): Promise<void> {
    const w = this.wake.promise;
    if (signal === undefined) return w;
    if (signal.aborted) throw signal.reason;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      w.then(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** The size is known (from the source's headers): reserves it in the spool. Throws SpoolError when it does not fit. */
  async begin(size: number, mediaType: string | undefined): Promise<void> {
    if (this.state !== 'pending') {
      if (this.size !== size) throw new SpoolError(`size changed from ${this.size} to ${size}`);
      return;
    }
    await this.spool.reserve(this, size);
    this.size = size;
    this.mediaType = mediaType;
    this.state = 'filling';
    this.notify();
    if (size === 0) await this.finish();
  }

  /**
   * Appends bytes at `written` (one buffer, or several in one vectored write); verifies the digest when
   * the last byte arrives. Throws when the entry failed.
   */
  async write(data: Buffer | Buffer[]): Promise<void> {
    if (this.state !== 'filling') throw this.error ?? new SpoolError(`entry is ${this.state}`);
    const chunks = Array.isArray(data) ? data : [data];
    const length = chunks.reduce((n, c) => n + c.length, 0);
    const size = this.size as number;
    if (this.written + length > size) {
      throw this.fail(new SpoolError(`source sent more than ${size} bytes`));
    }
    try {
      let off = 0;
      if (chunks.length > 1) off = (await this.file.writev(chunks, this.written)).bytesWritten;
      // A short vectored write (rare) goes on chunk by chunk.
      for (let at = 0, i = 0; off < length && i < chunks.length; i++) {
        const c = chunks[i] as Buffer;
        for (let from = Math.max(0, off - at); from < c.length; ) {
          const { bytesWritten } = await this.file.write(c, from, c.length - from, this.written + at + from);
          from += bytesWritten;
          off += bytesWritten;
        }
        at += c.length;
      }
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw this.fail(
        new SpoolError(e.code === 'ENOSPC' ? 'spool disk full' : `spool write failed: ${e.message}`),
      );
    }
    if (this.state !== 'filling') throw this.error ?? new SpoolError(`entry is ${this.state}`);
    try {
      await this.hash.advance(length);
    } catch (err) {
      throw this.fail(new SpoolError(`digest check failed: ${(err as Error).message}`));
    }
    this.written += length;
    if (this.written === size) {
      await this.finish();
      if (this.error !== undefined) throw this.error;
    } else this.notify();
  }

  private async finish(): Promise<void> {
    let got: string;
    try {
      got = await this.hash.digest();
    } catch (err) {
      this.fail(new SpoolError(`digest check failed: ${(err as Error).message}`));
      return;
    }
    if (this.state !== 'filling') return;
    if (got !== this.expected) {
      this.fail(
        new SpoolError(`digest mismatch for ${this.digest}: the bytes hash to ${this.algorithm}:${got}`),
      );
      return;
    }
    this.state = 'complete';
    this.notify();
  }

  /** Marks the entry failed (readers get the error); returns the error. Idempotent. */
  fail(err: Error): Error {
    if (this.state === 'failed' || this.state === 'complete') return this.error ?? err;
    this.state = 'failed';
    this.error = err;
    this.hash.drop();
    this.notify();
    this.spool.release(this);
    return err;
  }

  /** Waits until the size is known; undefined when the entry failed or `signal` aborted. */
  async sizeKnown(signal: AbortSignal): Promise<number | undefined> {
    while (this.state === 'pending') {
      try {
        await this.changed(signal);
      } catch {
        return undefined;
      }
    }
    return this.state === 'failed' ? undefined : this.size;
  }

  /**
   * Streams bytes `start`..`end` (inclusive; default the whole entry), waiting for bytes not yet
   * written. Throws the entry's error when it fails before the range is out.
   */
  async *read(start = 0, end?: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    this.readers++;
    try {
      let pos = start;
      for (;;) {
        if (this.state === 'failed') throw this.error;
        const last = end ?? (this.size === undefined ? undefined : this.size - 1);
        if (last !== undefined && pos > last) return;
        const limit = this.readable();
        if (last !== undefined && pos < limit) {
          const n = Math.min(READ_CHUNK, Math.min(last + 1, limit) - pos);
          const buf = Buffer.allocUnsafe(n);
          const { bytesRead } = await this.file.read(buf, 0, n, pos);
          if (bytesRead <= 0) throw new SpoolError('spool file shorter than written');
          pos += bytesRead;
          yield bytesRead === n ? buf : buf.subarray(0, bytesRead);
          continue;
        }
        await this.changed(signal);
      }
    } finally {
      this.readers--;
      if (this.removed && this.readers === 0) await this.close();
    }
  }

  /**
   * Waits until the byte at `pos` is readable; resolves with the end (exclusive) of the readable
   * bytes. Rejects with the entry's error when it fails first, or with `signal`'s reason.
   */
  async readableUpTo(pos: number, signal?: AbortSignal): Promise<number> {
    for (;;) {
      if (this.state === 'failed') throw this.error;
      const limit = this.readable();
      if (pos < limit || this.state === 'complete') return limit;
      await this.changed(signal);
    }
  }

  /**
   * The entry as a body file for the blob path (`file-body.ts`: recycled buffers, no stream): reads
   * wait for bytes still to come, the file stays open until `close`. `onBytes` counts what is read.
   */
  body(onBytes?: (n: number) => void): BodyFile {
    this.readers++;
    let closed = false;
    return {
      read: async (buffer, offset, length, position) => {
        if (this.state === 'failed') throw this.error;
        // Never past what is readable (the last byte waits for the digest), whatever the caller asks.
        const n = Math.max(0, Math.min(length, this.readable() - position));
        const r = n === 0 ? { bytesRead: 0 } : await this.file.read(buffer, offset, n, position);
        onBytes?.(r.bytesRead);
        return r;
      },
      readableUpTo: (pos, signal) => this.readableUpTo(pos, signal),
      close: async () => {
        if (closed) return;
        closed = true;
        this.readers--;
        if (this.removed && this.readers === 0) await this.close();
      },
    };
  }

  /**
   * Drops the entry: the file is unlinked now, closed when the last reader ends. Readers of a
   * complete entry finish their range; an incomplete entry fails.
   */
  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    if (this.state !== 'complete') this.fail(new SpoolError('entry removed'));
    await rm(this.path, { force: true }).catch(() => {});
    if (this.readers === 0) await this.close();
  }

  private closed = false;
  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.file.close().catch(() => {});
  }
}

/** Spool files under one directory, bounded by a total size and an entry count. */
export class Spool {
  private readonly entries = new Map<string, SpoolEntry>();
  private reserved = 0;
  private readonly reservations = new Map<SpoolEntry, number>();
  private readonly maxEntries: number;
  private readonly reserveBytes: number;
  private readonly freeBytes: (dir: string) => Promise<number>;
  private seq = 0;
  private readonly hashing = new HashWorker();

  private readonly opts: SpoolOptions;

  private constructor(opts: SpoolOptions) {
    this.opts = opts;
    this.maxEntries = opts.maxEntries ?? 256;
    this.reserveBytes = opts.reserveBytes ?? 64 * 1024 * 1024;
    this.freeBytes =
      opts.freeBytes ??
      (async (dir) => {
        const s = await statfs(dir);
        return s.bavail * s.bsize;
      });
  }

  /** Creates the directory and removes files a previous run left. */
  static async open(opts: SpoolOptions): Promise<Spool> {
    await mkdir(opts.dir, { recursive: true });
    for (const name of await readdir(opts.dir)) {
      if (name.endsWith('.spool')) await rm(join(opts.dir, name), { force: true });
    }
    return new Spool(opts);
  }

  get maxBytes(): number {
    return this.opts.maxBytes;
  }

  /** Bytes reserved by live entries. */
  get usedBytes(): number {
    return this.reserved;
  }

  /** The live (not failed) entry of a digest. */
  get(digest: string): SpoolEntry | undefined {
    const e = this.entries.get(digest);
    return e?.state === 'failed' ? undefined : e;
  }

  list(): SpoolEntry[] {
    return [...this.entries.values()];
  }

  /** A new pending entry (replacing a failed one). Throws SpoolError when the spool holds too many. */
  async create(digest: string): Promise<SpoolEntry> {
    const old = this.entries.get(digest);
    if (old !== undefined && old.state !== 'failed') throw new SpoolError(`${digest} is already spooled`);
    if (old !== undefined) await this.remove(old);
    if (this.entries.size >= this.maxEntries) throw new SpoolError(`spool holds ${this.maxEntries} entries`);
    parseDigest(digest);
    const path = join(this.opts.dir, `${process.pid}-${++this.seq}.spool`);
    const file = await open(path, 'w+', 0o600);
    const e = new SpoolEntry(digest, file, path, this);
    this.entries.set(digest, e);
    return e;
  }

  /** Removes an entry (and its file). */
  async remove(e: SpoolEntry): Promise<void> {
    if (this.entries.get(e.digest) === e) this.entries.delete(e.digest);
    this.release(e);
    await e.remove();
  }

  /** @internal reserves `size` bytes for `e` against the cap and the file system's free space. */
  async reserve(e: SpoolEntry, size: number): Promise<void> {
    if (this.reserved + size > this.opts.maxBytes) {
      throw e.fail(
        new SpoolError(
          `spool full: ${size} bytes do not fit (${this.reserved} of ${this.opts.maxBytes} reserved)`,
        ),
      );
    }
    let free: number;
    try {
      free = await this.freeBytes(this.opts.dir);
    } catch (err) {
      throw e.fail(new SpoolError(`spool disk unusable: ${(err as Error).message}`));
    }
    if (free < size + this.reserveBytes) {
      throw e.fail(new SpoolError(`spool disk full: ${free} bytes free, ${size} needed`));
    }
    this.reserved += size;
    this.reservations.set(e, size);
  }

  /** @internal returns an entry's reservation. */
  release(e: SpoolEntry): void {
    const n = this.reservations.get(e);
    if (n === undefined) return;
    this.reservations.delete(e);
    this.reserved -= n;
  }

  /** @internal a hasher for an entry's file (in the spool's worker thread). */
  hasher(algorithm: string, path: string): FileHasher {
    return this.hashing.fileHasher(algorithm, path);
  }

  /** Removes every entry. */
  async close(): Promise<void> {
    for (const e of [...this.entries.values()]) await this.remove(e);
    await this.hashing.close();
  }
}
