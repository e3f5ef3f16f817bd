// 25 nodes (beyond k = 20), spread over 5 processes (cluster/harness.ts) on 127.77.40.x: every node
// bootstraps from node 1 only and finds the others through the members protocol; a digest
// advertised by one node is found from every node; once a provider is known dead no lookup yields
// or dials it; a restarted provider (same identity) rejoins and its digest is found from every node
// again. Every wait polls with a deadline; nothing asserts on time.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Cluster, until } from './cluster/harness.ts';

const N = 25;
const WORKERS = 5;
const t0 = Date.now();
/** Progress on stderr: where a run on a loaded machine spends its time. */
const progress = (step: string) => process.stderr.write(`scale.test: ${step} after ${Date.now() - t0} ms\n`);

test(`${N} nodes in ${WORKERS} processes: every node finds a digest of one node, a dead provider is skipped, a restarted one is found again`, async (t) => {
  const cluster = new Cluster(WORKERS, '127.77.40');
  const dataDir = await mkdtemp(join(tmpdir(), 'ferry-scale-'));
  t.after(async () => {
    await cluster.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  // on a loaded test machine pings and dials (noise handshakes of many nodes at once) can take
  // seconds: a slow one must not look like a dead peer
  const common = { pingTimeoutMs: 30_000, dialTimeoutMs: 20_000 };
  const first = await cluster.start(0, common);
  const bootstrap = [first.addresses[0] as string];
  // in waves of one node per process, not all at once: start-up is not what this test is about
  for (let i = 1; i < N; i += WORKERS) {
    const wave = Array.from({ length: Math.min(WORKERS, N - i) }, (_, j) => i + j);
    await Promise.all(
      wave.map((n) => cluster.start(n, { ...common, bootstrap, ...(n === 1 ? { dataDir } : {}) })),
    );
  }
  const all = [...cluster.nodes.keys()];
  let counts: number[] = [];
  await until(
    'full mesh through the members protocol',
    async () => {
      counts = await Promise.all(all.map((i) => cluster.peers(i)));
      return counts.every((n) => n === N - 1);
    },
    300_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; peers per node: ${counts.join(' ')}`);
  });
  progress('mesh');

  // one digest on node 0 only: found from every other node
  const only = `sha256:${'5a'.repeat(32)}`;
  await cluster.advertise(0, [only]);
  const holder = cluster.nodes.get(0)?.peerId;
  await Promise.all(
    all
      .slice(1)
      .map((i) =>
        until(`node ${i} finds the digest of node 0`, async () =>
          (await cluster.lookup(i, only)).found.includes(holder as string),
        ),
      ),
  );

  progress('every node found the digest');
  // a second provider (node 1) of another digest dies: every node learns it and skips it
  const key = `sha256:${'5c'.repeat(32)}`;
  await cluster.advertise(0, [key]);
  await cluster.advertise(1, [key]);
  const deadId = cluster.nodes.get(1)?.peerId as string;
  const others = all.filter((i) => i !== 1);
  await Promise.all(
    others
      .slice(1)
      .map((i) =>
        until(
          `node ${i} finds both providers`,
          async () => (await cluster.lookup(i, key)).found.length === 2,
        ),
      ),
  );
  progress('both providers found');
  await cluster.stop(1);
  await until('every node knows the provider is dead', async () =>
    (await Promise.all(others.map((i) => cluster.events(i)))).every((e) =>
      e.gone.some((g) => g.peer === deadId),
    ),
  );
  const dialsToDead = async () =>
    (await Promise.all(others.map((i) => cluster.events(i))))
      .flatMap((e) => e.unreachable)
      .filter((u) => u.peer === deadId).length;
  progress('death known');
  const before = await dialsToDead();
  for (const i of others.slice(1)) {
    const { found } = await cluster.lookup(i, key);
    assert.deepEqual(found, [holder], `node ${i}: only the live provider`);
  }
  assert.equal(await dialsToDead(), before, 'no lookup tried the dead provider once its death was known');

  progress('dead provider skipped');
  // node 1 restarts with its identity and advertises again: every node finds it again
  await cluster.start(1, { ...common, bootstrap, dataDir });
  assert.equal(cluster.nodes.get(1)?.peerId, deadId, 'same identity after the restart');
  const fresh = `sha256:${'5e'.repeat(32)}`;
  await cluster.advertise(1, [key, fresh]);
  await Promise.all(
    others.map((i) =>
      until(`node ${i} finds the restarted node's digests`, async () => {
        const [a, b] = await Promise.all([cluster.lookup(i, key), cluster.lookup(i, fresh)]);
        return a.found.includes(deadId) && b.found.includes(deadId);
      }),
    ),
  );
  progress('restarted node found');
});
