import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Level } from 'level';
import {
  createMemoryLastKnownStore,
  type LastKnownStore,
  openLastKnownStore,
  type Resolution,
} from '../src/index.ts';

function tmp(t: { after(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-resolver-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const d = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;
const res = (tag: string, digest: string, resolvedAt: number, repository = 'team/app'): Resolution => ({
  registry: 'example.com',
  repository,
  tag,
  digest,
  resolvedAt,
  source: 'upstream',
});

async function semantics(store: LastKnownStore): Promise<void> {
  assert.equal(await store.get('example.com', 'team/app', 'v1'), undefined);
  await store.record(res('v1', d(1), 1000));
  await store.record({
    ...res('v1', d(2), 3000),
    mediaType: 'application/vnd.oci.image.index.v1+json',
    size: 9,
  });
  await store.record(res('v1', d(3), 2000)); // older: ignored
  const { learnedAt, ...got } = (await store.get('example.com', 'team/app', 'v1'))!;
  assert.equal(typeof learnedAt, 'number', 'the store notes when it learned a record');
  assert.deepEqual(got, {
    ...res('v1', d(2), 3000),
    mediaType: 'application/vnd.oci.image.index.v1+json',
    size: 9,
  });
  await store.record(res('v2', d(4), 2500));
  await store.record(res('v3', d(5), 500));
  await store.record(res('v1', d(6), 500, 'other/app'));
  const recent = (await store.recent(10)).map((r) => `${r.repository}:${r.tag}@${r.resolvedAt}`);
  assert.deepEqual(recent.slice(0, 2), ['team/app:v1@3000', 'team/app:v2@2500']);
  assert.deepEqual(recent.slice(2).sort(), ['other/app:v1@500', 'team/app:v3@500']);
  assert.deepEqual(
    (await store.recent(1)).map((r) => r.tag),
    ['v1'],
  );
  assert.deepEqual(await store.recent(0), []);
  await assert.rejects(store.record({ ...res('v9', 'nope', 1) }), /bad digest/);
}

describe('memory store', () => {
  test('newest wins, recent newest first', async () => {
    await semantics(createMemoryLastKnownStore());
  });
});

/** The trust rules, run against both stores (clock injected). */
function trustRules(open: (opts: { now: () => number; maxEntries?: number }) => Promise<LastKnownStore>) {
  const T = Date.parse('2026-06-01T00:00:00Z');
  const peer = (tag: string, digest: string, resolvedAt: number): Resolution => ({
    ...res(tag, digest, resolvedAt),
    source: 'peer',
    peer: '12D3KooWLiar',
  });
  const get = (s: LastKnownStore, tag: string) =>
    s.get('example.com', 'team/app', tag).then((r) => r?.digest);

  test('a future-dated peer answer is refused, and never blocks a real upstream answer', async (t) => {
    let now = T;
    const store = await open({ now: () => now });
    t.after(() => store.close());
    assert.equal(await store.record(peer('v1', d(66), T + 3_600_000)), false, 'an hour ahead: refused');
    assert.equal(await get(store, 'v1'), undefined);
    // Within the allowed skew it is stored, but the next upstream answer (older clock) still wins.
    assert.equal(await store.record(peer('v1', d(66), T + 30_000)), true);
    now += 1000;
    assert.equal(await store.record(res('v1', d(1), now)), true, 'an upstream answer is never refused');
    assert.equal(await get(store, 'v1'), d(1));
  });

  test("a peer answer never replaces this node's own upstream record, however new", async (t) => {
    let now = T;
    const store = await open({ now: () => now });
    t.after(() => store.close());
    await store.record(res('v1', d(1), T));
    now += 60_000;
    assert.equal(await store.record(peer('v1', d(66), now)), false);
    assert.equal(await get(store, 'v1'), d(1));
    assert.equal(await store.record(peer('v2', d(7), 0)), false, 'a peer answer without a time is refused');
  });

  test('a peer-learned record ends when the upstream answers again (any tag of its registry)', async (t) => {
    let now = T;
    const store = await open({ now: () => now });
    t.after(() => store.close());
    await store.record(res('other', d(9), now)); // before the outage
    now += 60_000;
    assert.equal(await store.record(peer('v1', d(66), now - 1000)), true); // during the outage
    assert.equal(await get(store, 'v1'), d(66), 'served during the outage');
    assert.equal(
      (await store.get('example.com', 'team/app', 'v1'))?.peer,
      '12D3KooWLiar',
      'carries its source',
    );
    now += 60_000;
    await store.record(res('other', d(10), now)); // the upstream is back
    assert.equal(await get(store, 'v1'), undefined, 'not served once the upstream answered again');
    assert.deepEqual(
      (await store.recent(10)).map((r) => r.tag),
      ['other'],
    );
    // A newer peer record in a later outage counts again; upstreamAnswered (e.g. a 404) ends it too.
    now += 60_000;
    assert.equal(await store.record(peer('v1', d(67), now - 1000)), true);
    assert.equal(await get(store, 'v1'), d(67));
    now += 1;
    await store.upstreamAnswered('example.com');
    assert.equal(await get(store, 'v1'), undefined);
  });

  test('holds at most maxEntries records, evicting the oldest', async (t) => {
    const store = await open({ now: () => T, maxEntries: 3 });
    t.after(() => store.close());
    for (let i = 1; i <= 5; i++) await store.record(res(`t${i}`, d(i), T - 10_000 + i));
    assert.deepEqual(
      (await store.recent(10)).map((r) => r.tag),
      ['t5', 't4', 't3'],
    );
    assert.equal(await get(store, 't1'), undefined);
    await store.record(res('t5', d(50), T)); // a replacement is not a new entry
    assert.equal((await store.recent(10)).length, 3);
  });
}

describe('trust rules: memory store', () => {
  trustRules(async (o) => createMemoryLastKnownStore(o));
});

describe('trust rules: LevelDB store', () => {
  let n = 0;
  const base = mkdtempSync(join(tmpdir(), 'ferry-resolver-rules-'));
  process.on('exit', () => rmSync(base, { recursive: true, force: true }));
  trustRules((o) => openLastKnownStore(join(base, String(n++)), o));

  test('the end of peer records survives a restart', async (t) => {
    const dir = tmp(t);
    let now = Date.parse('2026-06-01T00:00:00Z');
    const a = await openLastKnownStore(dir, { now: () => now });
    await a.record({ ...res('v1', d(66), now - 1000), source: 'peer' });
    now += 1000;
    await a.record(res('other', d(1), now));
    await a.close();
    const b = await openLastKnownStore(dir, { now: () => now });
    t.after(() => b.close());
    assert.equal(await b.get('example.com', 'team/app', 'v1'), undefined);
  });
});

describe('LevelDB store', () => {
  test('newest wins, recent newest first, persists across close/reopen', async (t) => {
    const dir = tmp(t);
    const store = await openLastKnownStore(dir);
    await semantics(store);
    await store.close();
    const again = await openLastKnownStore(dir);
    t.after(() => again.close());
    assert.equal((await again.get('example.com', 'team/app', 'v1'))?.digest, d(2));
    assert.equal((await again.recent(10)).length, 4, 'the time index holds one entry per tag');
    // Concurrent records of one tag: the newest always wins, whatever order they land in.
    await Promise.all([5, 9, 7, 8, 6].map((n) => again.record(res('race', d(n), n * 1000))));
    assert.equal((await again.get('example.com', 'team/app', 'race'))?.digest, d(9));
    assert.equal((await again.recent(100)).filter((r) => r.tag === 'race').length, 1);
  });

  test('a second open of a held database fails with a clear error', async (t) => {
    const dir = tmp(t);
    const store = await openLastKnownStore(dir);
    t.after(() => store.close());
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { openLastKnownStore } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)};
       openLastKnownStore(${JSON.stringify(dir)}).then(() => console.log('opened'), (e) => console.log(e.message));`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (b) => {
      out += b;
    });
    await new Promise((r) => child.once('exit', r));
    assert.match(out, new RegExp(`last-known database ${dir} is in use by another process`));
  });

  test('corrupted values are skipped with a warning, never a crash', async (t) => {
    const dir = tmp(t);
    const store = await openLastKnownStore(dir);
    await store.record(res('good', d(1), 10));
    await store.record(res('bad', d(2), 20));
    await store.close();
    // Damage one record behind the store's back.
    const raw = new Level<string, string>(dir);
    await raw.put('example.com/team/app:bad', '{not json');
    await raw.put('example.com/team/app:shape', JSON.stringify({ digest: 'x' }));
    await raw.put(`!time!${'0'.repeat(14)}30!example.com/team/app:shape`, 'example.com/team/app:shape');
    await raw.close();
    const warnings: object[] = [];
    const again = await openLastKnownStore(dir, { logger: { warn: (o) => warnings.push(o) } });
    t.after(() => again.close());
    assert.equal(await again.get('example.com', 'team/app', 'bad'), undefined);
    assert.deepEqual(
      (await again.recent(10)).map((r) => r.tag),
      ['good'],
    );
    assert.ok(warnings.length >= 3, JSON.stringify(warnings));
    // A good record replaces a corrupted one.
    await again.record(res('bad', d(3), 5));
    assert.equal((await again.get('example.com', 'team/app', 'bad'))?.digest, d(3));
  });

  test('kill -9 mid-burst: every acknowledged record is there after reopen', async (t) => {
    const dir = tmp(t);
    const childFile = fileURLToPath(new URL('./store-child.ts', import.meta.url));
    const child = spawn(process.execPath, [childFile, dir, '100000'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.after(() => child.kill('SIGKILL'));
    const acked: string[] = [];
    let buf = '';
    const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      let nl = buf.indexOf('\n');
      while (nl !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('ack ')) acked.push(line.slice(4));
        // Kill mid-burst, while writes are in flight.
        if (acked.length === 300) child.kill('SIGKILL');
        nl = buf.indexOf('\n');
      }
    });
    assert.equal(await exited, 'SIGKILL');
    assert.ok(acked.length >= 300, `acknowledged ${acked.length}`);
    assert.ok(acked.length < 100000, 'killed before the burst ended');
    t.diagnostic(`${acked.length} records acknowledged before SIGKILL`);
    const store = await openLastKnownStore(dir);
    t.after(() => store.close());
    const missing: string[] = [];
    for (const tag of acked) {
      const r = await store.get('example.com', 'burst/app', tag);
      if (r?.digest !== d(Number(tag.slice(1)))) missing.push(tag);
    }
    assert.deepEqual(missing, []);
    assert.ok(readdirSync(dir).includes('CURRENT'));
    const recent = await store.recent(1);
    assert.ok((recent[0]?.resolvedAt ?? 0) >= 1_700_000_000_000 + acked.length - 1);
  });
});
