/**
 * Digest checks off the event loop: SHA-256 of a blob costs the thread about as much as every other step
 * of a first pull together (a profile of a 256 MiB pull), and on a verified relay it was the main thread's
 * largest cost, so a worker thread (one per spool, one for the peer relay) hashes copies of the bytes
 * while the main thread goes on writing and forwarding them. Copies are gathered into batches of up to
 * 1 MiB, one message each. A worker that fails makes the entries hashing in it fail (their transfers
 * start over or break) and its owner hash on the main thread from then on.
 */
import { createHash } from 'node:crypto';
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

/** Bytes an entry may have queued in the worker before `update` waits. */
const MAX_QUEUED = 8 * 1024 * 1024;

/** Bytes copied together before one message goes to the worker. */
const BATCH = 1024 * 1024;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = hashes.get(m.id);
    if (h === undefined) { h = createHash(m.algorithm); hashes.set(m.id, h); }
    h.update(m.bytes);
    parentPort.postMessage({ op: 'hashed', id: m.id, n: m.bytes.byteLength });
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? createHash(m.algorithm);
    hashes.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.digest('hex') });
  } else if (m.op === 'drop') {
    hashes.delete(m.id);
  }
});
`;

interface Pending {
  queued: number;
  drained: PromiseWithResolvers<void> | undefined;
  done: PromiseWithResolvers<string> | undefined;
}

type Message = { op: 'hashed'; id: number; n: number } | { op: 'digest'; id: number; hex: string };

/** One worker thread hashing for every entry of a spool (started on first use). */
export class HashWorker {
  private worker: Worker | undefined;
  private broken: Error | undefined;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();

  hasher(algorithm: string): Hasher {
    const worker = this.broken === undefined ? this.start() : undefined;
    if (worker === undefined) return inThread(algorithm);
    const id = ++this.seq;
    const p: Pending = { queued: 0, drained: undefined, done: undefined };
    this.pending.set(id, p);
    const failed = () => this.broken ?? new Error('hash worker stopped');
    let batch: Uint8Array<ArrayBuffer> | undefined;
    let filled = 0;
    const flush = () => {
      if (batch === undefined || filled === 0) return;
      const bytes = batch.subarray(0, filled);
      batch = undefined;
      filled = 0;
      p.queued += bytes.length;
      worker.postMessage({ op: 'update', id, algorithm, bytes }, [bytes.buffer]);
    };
    return {
      update: async (buf) => {
        if (!this.pending.has(id)) throw failed();
        for (let off = 0; off < buf.length; ) {
          // Its own (transferable) memory, not zero-filled: every byte is written before it is sent.
          batch ??= new Uint8Array(Buffer.allocUnsafeSlow(Math.max(BATCH, buf.length - off)).buffer);
          const n = Math.min(buf.length - off, batch.length - filled);
          batch.set(buf.subarray(off, off + n), filled);
          filled += n;
          off += n;
          if (filled === batch.length) flush();
        }
        while (p.queued > MAX_QUEUED) {
          p.drained = Promise.withResolvers();
          await p.drained.promise;
        }
      },
      digest: () => {
        if (!this.pending.has(id)) return Promise.reject(failed());
        flush();
        p.done = Promise.withResolvers();
        worker.postMessage({ op: 'digest', id, algorithm });
        return p.done.promise;
      },
      drop: () => {
        batch = undefined;
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
