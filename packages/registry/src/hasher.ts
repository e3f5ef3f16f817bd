/**
 * Digest checks off the event loop: SHA-256 of a blob costs the thread about as much as every other step
 * of a first pull together (a profile of a 256 MiB pull), and on a verified relay it was the main thread's
 * largest cost, so a worker thread (one per spool, one for the peer relay) hashes while the main thread
 * goes on writing and forwarding the bytes. The relay's bytes are copied into batches of up to 1 MiB,
 * one message each. A spool entry's bytes are already in its file: the worker reads them from there
 * (`fileHasher`), so the main thread copies nothing and the digest is that of the bytes readers get.
 * A worker that fails makes the entries hashing in it fail (their transfers start over or break) and its
 * owner hash on the main thread from then on.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';

/** Hashes one entry's bytes in order. */
export interface Hasher {
  /** Takes `buf` (copied); waits only while too many bytes are queued for the worker. */
  update(buf: Buffer): Promise<void>;
  /** The hex digest of everything updated. */
  digest(): Promise<string>;
  /** Forgets the entry (it failed or was removed). */
  drop(): void;
}

/** Hashes a file's bytes in order, as they are appended to it. */
export interface FileHasher {
  /** `n` more bytes were written to the file after those already given; waits while the worker is far behind. */
  advance(n: number): Promise<void>;
  /** The hex digest of the bytes given. */
  digest(): Promise<string>;
  /** Forgets the entry (it failed or was removed). */
  drop(): void;
}

/** Bytes an entry may have queued in the worker before `update` waits. */
const MAX_QUEUED = 8 * 1024 * 1024;

/** Bytes of a file appended before one message tells the worker to hash them. */
const FILE_STEP = 2 * 1024 * 1024;

/** Bytes copied together before one message goes to the worker. */
const BATCH = 1024 * 1024;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const hashes = new Map();
const files = new Map();
const buf = Buffer.allocUnsafe(${BATCH});
const hashOf = (m) => {
  let h = hashes.get(m.id);
  if (h === undefined) { h = createHash(m.algorithm); hashes.set(m.id, h); }
  return h;
};
const closeFile = (id) => {
  const f = files.get(id);
  files.delete(id);
  if (f !== undefined) try { closeSync(f.fd); } catch {}
};
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    hashOf(m).update(m.bytes);
    parentPort.postMessage({ op: 'hashed', id: m.id, n: m.bytes.byteLength });
  } else if (m.op === 'file') {
    try {
      const h = hashOf(m);
      let f = files.get(m.id);
      if (f === undefined) { f = { fd: openSync(m.path, 'r'), pos: 0 }; files.set(m.id, f); }
      for (let left = m.n; left > 0; ) {
        const got = readSync(f.fd, buf, 0, Math.min(left, buf.length), f.pos);
        if (got <= 0) throw new Error('file shorter than written');
        h.update(buf.subarray(0, got));
        f.pos += got;
        left -= got;
      }
      parentPort.postMessage({ op: 'hashed', id: m.id, n: m.n });
    } catch (err) {
      hashes.delete(m.id);
      closeFile(m.id);
      parentPort.postMessage({ op: 'error', id: m.id, message: String(err && err.message) });
    }
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? createHash(m.algorithm);
    hashes.delete(m.id);
    closeFile(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.digest('hex') });
  } else if (m.op === 'drop') {
    hashes.delete(m.id);
    closeFile(m.id);
  }
});
`;

interface Pending {
  queued: number;
  /** The worker could not hash it (its file could not be read). */
  error?: Error;
  drained: PromiseWithResolvers<void> | undefined;
  done: PromiseWithResolvers<string> | undefined;
}

type Message =
  | { op: 'hashed'; id: number; n: number }
  | { op: 'digest'; id: number; hex: string }
  | { op: 'error'; id: number; message: string };

/** One worker thread hashing for every entry of a spool (started on first use). */
export class HashWorker {
  private worker: Worker | undefined;
  private broken: Error | undefined;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();

  hasher(algorithm: string): Hasher {
    const worker = this.broken === undefined ? this.start() : undefined;
    if (worker === undefined) return inThread(algorithm);
    let batch: Uint8Array<ArrayBuffer> | undefined;
    let filled = 0;
    const e = this.entry(worker, algorithm, () => {
      if (batch === undefined || filled === 0) return;
      const bytes = batch.subarray(0, filled);
      batch = undefined;
      filled = 0;
      e.p.queued += bytes.length;
      worker.postMessage({ op: 'update', id: e.id, algorithm, bytes }, [bytes.buffer]);
    });
    return {
      update: async (buf) => {
        e.check();
        for (let off = 0; off < buf.length; ) {
          // Its own (transferable) memory, not zero-filled: every byte is written before it is sent.
          batch ??= new Uint8Array(Buffer.allocUnsafeSlow(Math.max(BATCH, buf.length - off)).buffer);
          const n = Math.min(buf.length - off, batch.length - filled);
          batch.set(buf.subarray(off, off + n), filled);
          filled += n;
          off += n;
          if (filled === batch.length) e.flush();
        }
        await e.drained();
      },
      digest: e.digest,
      drop: () => {
        batch = undefined;
        e.drop();
      },
    };
  }

  /** Hashes the file at `path` from its start, as `advance` says bytes were appended to it. */
  fileHasher(algorithm: string, path: string): FileHasher {
    const worker = this.broken === undefined ? this.start() : undefined;
    if (worker === undefined) return fileInThread(algorithm, path);
    /** Bytes appended and not yet handed to the worker: one message per FILE_STEP bytes. */
    let unsent = 0;
    const e = this.entry(worker, algorithm, () => {
      if (unsent === 0) return;
      e.p.queued += unsent;
      worker.postMessage({ op: 'file', id: e.id, algorithm, path, n: unsent });
      unsent = 0;
    });
    return {
      advance: async (n) => {
        e.check();
        unsent += n;
        if (unsent >= FILE_STEP) e.flush();
        await e.drained();
      },
      digest: e.digest,
      drop: e.drop,
    };
  }

  /** One entry hashing in `worker`; `flush` hands it what is held back, before the digest too. */
  private entry(worker: Worker, algorithm: string, flush: () => void) {
    const id = ++this.seq;
    const p: Pending = { queued: 0, drained: undefined, done: undefined };
    this.pending.set(id, p);
    const failed = () => p.error ?? this.broken ?? new Error('hash worker stopped');
    return {
      id,
      p,
      flush,
      check: () => {
        if (!this.pending.has(id)) throw failed();
      },
      /** Waits while too many bytes are queued in the worker. */
      drained: async () => {
        while (p.queued > MAX_QUEUED) {
          p.drained = Promise.withResolvers();
          await p.drained.promise;
        }
      },
      digest: (): Promise<string> => {
        if (!this.pending.has(id)) return Promise.reject(failed());
        flush();
        p.done = Promise.withResolvers();
        worker.postMessage({ op: 'digest', id, algorithm });
        return p.done.promise;
      },
      drop: () => {
        if (this.pending.delete(id)) worker.postMessage({ op: 'drop', id });
      },
    };
  }

  private start(): Worker | undefined {
    if (this.worker !== undefined) return this.worker;
    try {
      const w = new Worker(WORKER_SOURCE, { eval: true });
      w.unref();
      w.on('message', (m: Message) => this.onMessage(m));
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => this.fail(new Error(`hash worker exited (${code})`)));
      this.worker = w;
      return w;
    } catch (err) {
      this.fail(err as Error);
      return undefined;
    }
  }

  private onMessage(m: Message): void {
    const p = this.pending.get(m.id);
    if (p === undefined) return;
    if (m.op === 'hashed') {
      p.queued -= m.n;
      if (p.queued <= MAX_QUEUED) p.drained?.resolve();
    } else if (m.op === 'error') {
      this.pending.delete(m.id);
      // Updates sent before the error reached us may have started the entry again in the worker.
      this.worker?.postMessage({ op: 'drop', id: m.id });
      p.error = new Error(m.message);
      p.drained?.reject(p.error);
      p.done?.reject(p.error);
    } else {
      this.pending.delete(m.id);
      p.done?.resolve(m.hex);
    }
  }

  private fail(err: Error): void {
    if (this.broken !== undefined) return;
    this.broken = err;
    this.worker = undefined;
    for (const p of this.pending.values()) {
      p.drained?.reject(err);
      p.done?.reject(err);
    }
    this.pending.clear();
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.fail(new Error('spool closed'));
    await w?.terminate();
  }
}

/** Hashing on the calling thread (the worker could not start or failed). */
function inThread(algorithm: string): Hasher {
  const h = createHash(algorithm);
  return {
    update: async (buf) => {
      h.update(buf);
    },
    digest: async () => h.digest('hex'),
    drop: () => {},
  };
}

/** A file's hash on the calling thread (the worker could not start or failed). */
function fileInThread(algorithm: string, path: string): FileHasher {
  const h = createHash(algorithm);
  const buf = Buffer.allocUnsafe(BATCH);
  let file: Awaited<ReturnType<typeof open>> | undefined;
  let pos = 0;
  const close = () => {
    void file?.close().catch(() => {});
    file = undefined;
  };
  return {
    advance: async (n) => {
      file ??= await open(path, 'r');
      for (let left = n; left > 0; ) {
        const { bytesRead } = await file.read(buf, 0, Math.min(left, buf.length), pos);
        if (bytesRead <= 0) throw new Error('file shorter than written');
        h.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
        left -= bytesRead;
      }
    },
    digest: async () => {
      close();
      return h.digest('hex');
    },
    drop: close,
  };
}
