import { mkdir } from 'node:fs/promises';
import { isDigest, tagKey } from '@ferry/oci';
import { Level } from 'level';
import { checkResolution, DEFAULT_MAX_ENTRIES, isCurrent, mayRecord } from './store-rules.ts';
import type { LastKnownStore, LastKnownStoreOptions, Resolution, WarnLogger } from './types.ts';

/*
 * Layout (one LevelDB, utf8 keys and values):
 *   <registry>/<repo>:<tag>                 -> JSON Resolution (the record for that tag)
 *   !time!<resolvedAt, 16 digits>!<tagKey>   -> <tagKey>   (secondary index for `recent` and eviction)
 *   !upstream!<registry>                     -> ms when its upstream last answered (ends peer records)
 * A tag key never starts with '!' (registry hosts cannot), so the ranges never mix.
 * `record` replaces the primary value and moves the index entry in one atomic batch, written with
 * `sync: true` (fsync before it resolves). The rules are store-rules.ts's.
 */
const TIME_PREFIX = '!time!';
const TIME_END = '!time"'; // '"' follows '!': the upper bound of the index range
const UPSTREAM_PREFIX = '!upstream!';
const UPSTREAM_END = '!upstream"';

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
  const now = opts.now ?? Date.now;
  const maxEntries = Math.max(1, opts.maxEntries ?? DEFAULT_MAX_ENTRIES);
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
  const upstreamAt = new Map<string, number>();
  for await (const [k, v] of db.iterator({ gt: UPSTREAM_PREFIX, lt: UPSTREAM_END }))
    upstreamAt.set(k.slice(UPSTREAM_PREFIX.length), Number(v));
  let count = 0;
  for await (const _ of db.keys({ gt: TIME_PREFIX, lt: TIME_END })) count += 1;

  /** Evicts the oldest records beyond maxEntries. */
  const evict = async () => {
    while (count > maxEntries) {
      let oldest: [string, string] | undefined;
      for await (const entry of db.iterator({ gt: TIME_PREFIX, lt: TIME_END, limit: 1 })) oldest = entry;
      if (oldest === undefined) return;
      const [indexKey, key] = oldest;
      await queue(key, async () => {
        const cur = parseResolution(key, await db.get(key), log);
        const batch = db.batch().del(indexKey);
        // The index entry may be stale (record replaced meanwhile): only then keep the record.
        if (cur === undefined || timeKey(cur.resolvedAt, key) === indexKey) batch.del(key);
        await batch.write();
      });
      count -= 1;
    }
  };

  /** Removes a record that ended (a peer record the upstream has answered since). */
  const drop = (key: string, r: Resolution) =>
    queue(key, async () => {
      const cur = parseResolution(key, await db.get(key), log);
      if (cur === undefined || cur.learnedAt !== r.learnedAt) return;
      await db.batch().del(key).del(timeKey(cur.resolvedAt, key)).write();
      count -= 1;
    });

  return {
    async record(r) {
      checkResolution(r);
      const key = tagKey(r.registry, r.repository, r.tag);
      const stored = await queue(key, async () => {
        const old = parseResolution(key, await db.get(key), log);
        const t = now();
        if (!mayRecord(old, r, t)) return false;
        const batch = db.batch();
        if (old) batch.del(timeKey(old.resolvedAt, key));
        else count += 1;
        batch.put(key, JSON.stringify({ ...r, learnedAt: t }));
        batch.put(timeKey(r.resolvedAt, key), key);
        if (r.source === 'upstream') {
          upstreamAt.set(r.registry, t);
          batch.put(`${UPSTREAM_PREFIX}${r.registry}`, String(t));
        }
        await batch.write({ sync: true }); // atomic, fsynced before `record` resolves
        return true;
      });
      if (count > maxEntries) await evict();
      return stored;
    },
    async get(registry, repository, tag) {
      const key = tagKey(registry, repository, tag);
      const r = parseResolution(key, await db.get(key), log);
      if (r === undefined || isCurrent(r, upstreamAt.get(registry))) return r;
      await drop(key, r);
      return undefined;
    },
    async upstreamAnswered(registry) {
      const t = now();
      upstreamAt.set(registry, t);
      await db.put(`${UPSTREAM_PREFIX}${registry}`, String(t), { sync: true });
    },
    async recent(limit) {
      if (!(limit > 0)) return [];
      const out: Resolution[] = [];
      // Walk the time index newest first; entries whose record is gone, corrupted or ended are skipped.
      for await (const key of db.values({ gt: TIME_PREFIX, lt: TIME_END, reverse: true })) {
        const r = parseResolution(key, await db.get(key), log);
        if (r && isCurrent(r, upstreamAt.get(r.registry))) out.push(r);
        if (out.length >= limit) break;
      }
      return out;
    },
    async close() {
      await db.close();
    },
  };
}

/** The same rules in memory (tests, running without a data dir, or a data dir that cannot be written). */
export function createMemoryLastKnownStore(opts: Omit<LastKnownStoreOptions, 'logger'> = {}): LastKnownStore {
  const now = opts.now ?? Date.now;
  const maxEntries = Math.max(1, opts.maxEntries ?? DEFAULT_MAX_ENTRIES);
  const map = new Map<string, Resolution>();
  const upstreamAt = new Map<string, number>();
  return {
    async record(r) {
      checkResolution(r);
      const key = tagKey(r.registry, r.repository, r.tag);
      const t = now();
      if (!mayRecord(map.get(key), r, t)) return false;
      map.set(key, { ...r, learnedAt: t });
      if (r.source === 'upstream') upstreamAt.set(r.registry, t);
      while (map.size > maxEntries) {
        let oldest: [string, Resolution] | undefined;
        for (const e of map) if (oldest === undefined || e[1].resolvedAt < oldest[1].resolvedAt) oldest = e;
        map.delete(oldest![0]);
      }
      return true;
    },
    async get(registry, repository, tag) {
      const key = tagKey(registry, repository, tag);
      const r = map.get(key);
      if (r === undefined) return undefined;
      if (!isCurrent(r, upstreamAt.get(registry))) {
        map.delete(key);
        return undefined;
      }
      return { ...r };
    },
    async upstreamAnswered(registry) {
      upstreamAt.set(registry, now());
    },
    async recent(limit) {
      if (!(limit > 0)) return [];
      return [...map.values()]
        .filter((r) => isCurrent(r, upstreamAt.get(r.registry)))
        .sort((a, b) => b.resolvedAt - a.resolvedAt)
        .slice(0, limit)
        .map((r) => ({ ...r }));
    },
    async close() {
      map.clear();
    },
  };
}
