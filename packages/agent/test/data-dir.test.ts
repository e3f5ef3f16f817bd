import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createMemoryLastKnownStore, openLastKnownStore, type Resolution } from '@ferry/resolver';
import { createDataDirHealth, degradingLastKnownStore, probeDataDir } from '../src/data-dir.ts';

const digest = (c: string) => `sha256:${c.repeat(64)}`;
const res = (tag: string, c: string, source: 'upstream' | 'peer'): Resolution => ({
  registry: 'ghcr.io',
  repository: 'a/b',
  tag,
  digest: digest(c),
  resolvedAt: Date.now() - 1000,
  source,
});

function health() {
  const warnings: string[] = [];
  let gauge = -1;
  const h = createDataDirHealth(
    true,
    { set: (v) => (gauge = v) },
    { warn: (_o: object, m?: string) => warnings.push(String(m)) },
  );
  return { h, warnings, gauge: () => gauge };
}

describe('data dir', () => {
  it('the probe tells a writable dir from one that cannot take a file', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-datadir-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    assert.deepEqual(await probeDataDir(join(dir, 'data')), { writable: true });
    writeFileSync(join(dir, 'file'), '');
    const bad = await probeDataDir(join(dir, 'file', 'data'));
    assert.equal(bad.writable, false);
  });

  it('a last-known database whose writes fail degrades to memory: the request still records, one loud warning, gauge 0', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-datadir-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const disk = await openLastKnownStore(join(dir, 'tags'));
    t.after(() => disk.close());
    assert.equal(await disk.record(res('v1', 'a', 'upstream')), true);
    // The disk fills up: every write of the real LevelDB store fails from now on, reads still work.
    const full = {
      ...disk,
      record: async () => {
        throw new Error('IO error: No space left on device');
      },
      upstreamAnswered: async () => {
        throw new Error('IO error: No space left on device');
      },
    };
    const { h, warnings, gauge } = health();
    const store = degradingLastKnownStore(full, createMemoryLastKnownStore(), h);
    assert.equal(gauge(), 1);
    assert.equal(await store.record(res('v2', 'b', 'upstream')), true);
    assert.equal(await store.record(res('v3', 'c', 'upstream')), true);
    assert.equal(gauge(), 0);
    assert.equal(warnings.filter((w) => /DATA DIR WRITE FAILED/.test(w)).length, 1);
    assert.equal((await store.get('ghcr.io', 'a/b', 'v2'))?.digest, digest('b'));
    // What the disk held before stays readable.
    assert.equal((await store.get('ghcr.io', 'a/b', 'v1'))?.digest, digest('a'));
    // A peer's answer still never replaces this node's own upstream answer left on disk.
    assert.equal(await store.record(res('v1', 'd', 'peer')), false);
    assert.equal((await store.get('ghcr.io', 'a/b', 'v1'))?.digest, digest('a'));
    // A malformed resolution is the caller's error, not the disk's.
    await assert.rejects(store.record({ ...res('v4', 'e', 'upstream'), digest: 'nope' }), TypeError);
  });

  it('a closed (failed) database: reads count as no record, records go to memory', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-datadir-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const disk = await openLastKnownStore(join(dir, 'tags'));
    await disk.close();
    const { h, gauge } = health();
    const store = degradingLastKnownStore(disk, createMemoryLastKnownStore(), h);
    assert.equal(await store.get('ghcr.io', 'a/b', 'v1'), undefined);
    assert.equal(await store.record(res('v1', 'a', 'upstream')), true);
    assert.equal(gauge(), 0);
    assert.equal((await store.get('ghcr.io', 'a/b', 'v1'))?.digest, digest('a'));
    assert.equal((await store.recent(5)).length, 1);
  });
});
