/**
 * A full or unwritable --data-dir is not an outage: the agent probes the directory at start, and when it
 * cannot write there it keeps running on memory (last-known digests in the bounded memory store, an
 * in-memory peer identity unless one is already stored, first-pull sharing off), warns loudly and
 * exports `ferry_data_dir_writable` 0. A last-known database that fails later (a write error: disk
 * full, I/O error) degrades the same way instead of failing the request that wrote.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { LastKnownStore, Resolution } from '@ferry/resolver';
import type { Logger } from './logger.ts';

/** Bytes written by the start probe: enough that a nearly full disk fails it. */
const PROBE_BYTES = 64 * 1024;

/** True when `dir` exists (or can be made) and takes a small synced file; else the reason. */
export async function probeDataDir(
  dir: string,
): Promise<{ writable: true } | { writable: false; reason: string }> {
  const file = join(dir, `.ferry-probe-${process.pid}`);
  try {
    await mkdir(dir, { recursive: true });
    const fh = await open(file, 'w', 0o600);
    try {
      await fh.write(randomBytes(PROBE_BYTES));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await unlink(file);
    return { writable: true };
  } catch (err) {
    await unlink(file).catch(() => undefined);
    return { writable: false, reason: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
  }
}

/** Where the data dir's state is reported: the gauge and the log. */
export interface DataDirHealth {
  /** Whether the data dir takes writes (as last seen). */
  writable(): boolean;
  /** A write under the data dir failed: warn once (loudly) and set the gauge to 0. */
  failed(what: string, err: unknown): void;
}

export function createDataDirHealth(
  writableAtStart: boolean,
  gauge: { set(v: number): void },
  logger: Pick<Logger, 'warn'>,
): DataDirHealth {
  let ok = writableAtStart;
  gauge.set(ok ? 1 : 0);
  return {
    writable: () => ok,
    failed(what, err) {
      if (!ok) return;
      ok = false;
      gauge.set(0);
      logger.warn(
        { component: 'data-dir', what, err: (err as Error)?.message },
        'DATA DIR WRITE FAILED (disk full or I/O error): continuing on memory; last-known tag digests are kept in memory (bounded) and lost on restart',
      );
    },
  };
}

/**
 * The last-known store on disk, falling back to `memory` once a write fails: later records go to
 * memory, reads look in memory first, then on disk (a read error counts as no record).
 */
export function degradingLastKnownStore(
  disk: LastKnownStore,
  memory: LastKnownStore,
  health: Pick<DataDirHealth, 'failed'>,
): LastKnownStore {
  let degraded = false;
  const fromDisk = <T>(p: Promise<T>, fallback: T) => p.catch(() => fallback);
  return {
    async record(r: Resolution) {
      if (!degraded) {
        try {
          return await disk.record(r);
        } catch (err) {
          if (err instanceof TypeError) throw err; // a malformed resolution, not the disk
          degraded = true;
          health.failed('last-known database', err);
        }
      }
      // A peer's answer never replaces this node's own upstream answer, also the one left on disk.
      if (r.source === 'peer') {
        const own = await fromDisk(disk.get(r.registry, r.repository, r.tag), undefined);
        if (own?.source === 'upstream') return false;
      }
      return memory.record(r);
    },
    async get(registry, repository, tag) {
      if (degraded) {
        const m = await memory.get(registry, repository, tag);
        if (m !== undefined) return m;
      }
      return fromDisk(disk.get(registry, repository, tag), undefined);
    },
    async upstreamAnswered(registry) {
      await memory.upstreamAnswered(registry);
      if (!degraded) {
        try {
          await disk.upstreamAnswered(registry);
        } catch (err) {
          degraded = true;
          health.failed('last-known database', err);
        }
      }
    },
    async recent(limit) {
      const all = [
        ...(degraded ? await memory.recent(limit) : []),
        ...(await fromDisk(disk.recent(limit), [])),
      ];
      return all.sort((a, b) => b.resolvedAt - a.resolvedAt).slice(0, limit);
    },
    async close() {
      await memory.close();
      await disk.close().catch(() => undefined);
    },
  };
}
