import { mkdir } from 'node:fs/promises';
import { isDigest, tagKey } from '@ferry/oci';
import { Level } from 'level';
import type { LastKnownStore, LastKnownStoreOptions, Resolution, WarnLogger } from './types.ts';

/*
 * Layout (one LevelDB, utf8 keys and values):
 *   <registry>/<repo>:<tag>                 -> JSON Resolution (the newest known for that tag)
 *   !time!<resolvedAt, 16 digits>!<tagKey>   -> <tagKey>   (secondary index for `recent`, newest last)
 * A tag key never starts with '!' (registry hosts cannot), so the two ranges never mix.
 * `record` replaces the primary value and moves the index entry in one atomic batch, written with
 * `sync: true` (fsync before it resolves).
 */
const TIME_PREFIX = '!time!';
const TIME_END = '!time"'; // '"' follows '!': the upper bound of the index range

function timeKey(resolvedAt: number, key: string): string {
  return `${TIME_PREFIX}${String(Math.max(0, Math.floor(resolvedAt))).padStart(16, '0')}!${key}`;
}

const SOURCES = new Set(['upstream', 'last-known', 'local', 'peer']);

/** Parses a stored value; undefined (after a warning) when it is not a well-formed Resolution. */
function parseResolution(key: string, text: string | undefined, log: WarnLogger): Resolution | undefined {
  if (text === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    log.warn({ key }, 'last-known store: skipping a record that is not JSON');
    return undefined;
  }
  const r = v as Partial<Resolution> | null;
  if (
    typeof r !== 'object' ||
    r === null ||
    typeof r.registry !== 'string' ||
    typeof r.repository !== 'string' ||
    typeof r.tag !== 'string' ||
    typeof r.digest !== 'string' ||
    !isDigest(r.digest) ||
    typeof r.resolvedAt !== 'number' ||
    !Number.isFinite(r.resolvedAt) ||
    typeof r.source !== 'string' ||
    !SOURCES.has(r.source)
  ) {
    log.warn({ key }, 'last-known store: skipping a malformed record');
    return undefined;
  }
  return r as Resolution;
}

function checkResolution(r: Resolution): void {
  if (!r || typeof r.registry !== 'string' || typeof r.repository !== 'string' || typeof r.tag !== 'string') {
    throw new TypeError('Resolution needs registry, repository and tag strings');
  }
  if (typeof r.digest !== 'string' || !isDigest(r.digest))
    throw new TypeError(`bad digest ${String(r.digest)}`);
  if (typeof r.resolvedAt !== 'number' || !Number.isFinite(r.resolvedAt)) {
    throw new TypeError('Resolution.resolvedAt must be a finite number (ms since epoch)');
  }
}

const defaultLogger: WarnLogger = {
  warn(obj, msg) {
    process.emitWarning(`${msg ?? ''} ${JSON.stringify(obj)}`.trim(), 'FerryLastKnownStore');
  },
};

/** Serialises read-modify-write per key (one process holds the database: LevelDB's LOCK). */
function keyedQueue() {
  const tails = new Map<string, Promise<void>>();
  return <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const prev = tails.get(key) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    tails.set(key, tail);
    tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return run;
  };
}

/**
 * Opens (creating) the last-known database in `dir` with `level` (LevelDB). Only one process may hold it:
 * a second open fails with an error naming the directory.
 */
export async function openLastKnownStore(
  dir: string,
  opts: LastKnownStoreOptions = {},
): Promise<LastKnownStore> {
  const log = opts.logger ?? defaultLogger;
  await mkdir(dir, { recursive: true });
  const db = new Level<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  try {
    await db.open();
  } catch (err) {
    const e = err as { code?: string; cause?: { code?: string; message?: string }; message?: string };
    if (e.cause?.code === 'LEVEL_LOCKED' || e.code === 'LEVEL_LOCKED') {
      throw new Error(`last-known database ${dir} is in use by another process (LevelDB lock held)`, {
        cause: err,
      });
    }
    throw new Error(`last-known database ${dir} cannot be opened: ${e.cause?.message ?? e.message}`, {
      cause: err,
    });
  }
  const queue = keyedQueue();

  return {
    async record(r) {
      checkResolution(r);
      const key = tagKey(r.registry, r.repository, r.tag);
      return queue(key, async () => {
        const old = parseResolution(key, await db.get(key), log);
        if (old && old.resolvedAt > r.resolvedAt) return; // an older answer never overwrites a newer one
        const batch = db.batch();
        if (old) batch.del(timeKey(old.resolvedAt, key));
        batch.put(key, JSON.stringify(r));
        batch.put(timeKey(r.resolvedAt, key), key);
        await batch.write({ sync: true }); // atomic, fsynced before `record` resolves
      });
    },
    async get(registry, repository, tag) {
      const key = tagKey(registry, repository, tag);
      return parseResolution(key, await db.get(key), log);
    },
    async recent(limit) {
      if (!(limit > 0)) return [];
      const out: Resolution[] = [];
      // Walk the time index newest first; entries whose record is gone or corrupted are skipped.
      for await (const key of db.values({ gt: TIME_PREFIX, lt: TIME_END, reverse: true })) {
        const r = parseResolution(key, await db.get(key), log);
        if (r) out.push(r);
        if (out.length >= limit) break;
      }
      return out;
    },
    async close() {
      await db.close();
    },
  };
}

/** The same semantics in memory (tests, or running without a data dir). */
export function createMemoryLastKnownStore(): LastKnownStore {
  const map = new Map<string, Resolution>();
  return {
    async record(r) {
      checkResolution(r);
      const key = tagKey(r.registry, r.repository, r.tag);
      const old = map.get(key);
      if (old && old.resolvedAt > r.resolvedAt) return;
      map.set(key, { ...r });
    },
    async get(registry, repository, tag) {
      const r = map.get(tagKey(registry, repository, tag));
      return r ? { ...r } : undefined;
    },
    async recent(limit) {
      if (!(limit > 0)) return [];
      return [...map.values()]
        .sort((a, b) => b.resolvedAt - a.resolvedAt)
        .slice(0, limit)
        .map((r) => ({ ...r }));
    },
    async close() {
      map.clear();
    },
  };
}
