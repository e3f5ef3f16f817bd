// Mesh and liveness on 5 nodes (127.77.45.x): every node bootstraps from node 1 only and the mesh
// forms through the members protocol; a digest advertised by two nodes is found from every node;
// once a provider is known dead it is never yielded nor dialled again. (The same scenario at 25
// nodes, beyond k, in several processes, is scale.test.ts.) Then, in two processes: a frozen peer
// (SIGSTOP: its connections stay open and silent) is found by Ferry's liveness ping, and a second
// connection between two peers is closed; in four: a frozen peer is found by its ring
// predecessors, and a member that does not watch it is told and confirms it. In one process: a
// prober whose own event loop is blocked past its deadline does not take a live peer for gone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createP2PNode, type P2PLogger, type P2PNode, type Peer } from '../src/index.ts';
import { Liveness } from '../src/liveness.ts';
import { Cluster, until } from './cluster/harness.ts';
import { plainPeer } from './plain-peer.ts';

const N = 5;

async function providers(node: P2PNode, key: string): Promise<Peer[]> {
  const out: Peer[] = [];
  for await (const p of node.lookup(key, { signal: AbortSignal.timeout(5_000) })) {
    out.push(p);
  }
  return out;
}

test(`${N} nodes from one bootstrap peer: full mesh, every node finds a digest, a dead provider is skipped without a dial`, async (t) => {
  /** Per node: peer ids it failed to reach during a lookup, and peers it declared gone. */
  const unreachable: string[][] = [];
  const gone: string[][] = [];
  const logger = (i: number): P2PLogger => ({
    debug(obj: object, msg?: string) {
      if (msg === 'provider not reachable') {
        unreachable[i]?.push((obj as { peer: string }).peer);
      }
    },
    info(obj: object, msg?: string) {
      if (msg === 'peer gone: its provider records dropped') {
        gone[i]?.push((obj as { peer: string }).peer);
      }
    },
    warn() {},
    error() {},
  });
  const nodes: P2PNode[] = [];
  t.after(() => Promise.all(nodes.map((n) => n.stop())));
  for (let i = 0; i < N; i++) {
    unreachable.push([]);
    gone.push([]);
    const first = nodes[0];
    nodes.push(
      await createP2PNode({
        listen: { host: `127.77.45.${i + 1}`, port: 0 },
        registryPort: 5000 + i,
        logger: logger(i),
        ...(first === undefined ? {} : { bootstrapPeers: [first.addresses[0] as string] }),
      }),
    );
  }
  await until('full mesh through the members protocol', () => nodes.every((n) => n.peers().length === N - 1));

  const key = `sha256:${'5c'.repeat(32)}`;
  const [holder, second] = nodes as [P2PNode, P2PNode];
  await holder.advertise([key]);
  await second.advertise([key]);
  for (const [i, node] of nodes.entries()) {
    if (i < 2) {
      continue;
    }
    await until(
      `node ${i + 1} finds both providers`,
      async () => (await providers(node, key)).length === 2,
      15_000,
    );
  }

  // the second provider dies: every node learns it (its connection closes, the redial fails)
  const deadId = second.peerId;
  await second.stop();
  const others = nodes.filter((n) => n !== second);
  await until('every node knows the provider is dead', () =>
    others.every((n) => gone[nodes.indexOf(n)]?.includes(deadId)),
  );
  const dialsBefore = unreachable.flat().filter((p) => p === deadId).length;
  for (const node of others) {
    if (node === holder) {
      continue;
    }
    const found = await providers(node, key);
    assert.deepEqual(
      found.map((p) => p.id),
      [holder.peerId],
      'only the live provider',
    );
  }
  assert.equal(
    unreachable.flat().filter((p) => p === deadId).length,
    dialsBefore,
    'no lookup tried the dead provider once its death was known',
  );
});

test('a frozen peer (no FIN, no answer) is declared gone through a liveness ping, and a duplicate connection is closed', async (t) => {
  // two processes, one node each: freezing one (SIGSTOP) leaves its TCP connections open but
  // silent, as a host that vanished does; only a ping can tell
  const cluster = new Cluster(2, '127.77.46');
  t.after(async () => {
    cluster.signal(1, 'SIGKILL');
    await cluster.close();
  });
  const a = await cluster.start(0, { pingTimeoutMs: 1_000 });
  const b = await cluster.start(1, { pingTimeoutMs: 1_000, bootstrap: [a.addresses[0] as string] });
  await until('connected', async () => (await cluster.peers(0)) === 1 && (await cluster.peers(1)) === 1);
  // b dials a again while connected (as a simultaneous dial from both ends leaves it): both
  // ends close the same one of the two, the one dialled by the higher peer id
  await cluster.dialAgain(1, 0);
  await until(
    'the duplicate connection closed on both ends',
    async () => (await cluster.stats(0)).connections === 1 && (await cluster.stats(1)).connections === 1,
    30_000,
  );
  const closed =
    (await cluster.stats(0)).liveness.duplicatesClosed + (await cluster.stats(1)).liveness.duplicatesClosed;
  assert.ok(closed >= 1, 'a duplicate was closed');
  cluster.signal(1, 'SIGSTOP');
  await until(
    'node a declares the frozen node gone',
    async () => (await cluster.events(0)).gone.some((g) => g.peer === b.peerId),
    30_000,
  );
  assert.ok((await cluster.stats(0)).liveness.unresponsive >= 1, 'found by a ping left unanswered');
});

test('a frozen peer is found by its ring predecessors; a member that does not watch it is told and confirms it', async (t) => {
  // four processes, one node each; ring order by peer id [p0, p1, p2, p3]: p1 is watched by p3 and
  // p0 (its 2 predecessors); p2 watches p3 and p0, not p1, and learns of it from a suspicion
  const cluster = new Cluster(4, '127.77.49');
  let frozen = -1;
  t.after(async () => {
    if (frozen >= 0) {
      cluster.signal(frozen, 'SIGKILL');
    }
    await cluster.close();
  });
  const first = await cluster.start(0, { pingTimeoutMs: 1_000 });
  const ids = [first.peerId];
  for (let i = 1; i < 4; i++) {
    ids.push(
      (await cluster.start(i, { pingTimeoutMs: 1_000, bootstrap: [first.addresses[0] as string] })).peerId,
    );
  }
  const all = [0, 1, 2, 3];
  await until('full mesh', async () =>
    (await Promise.all(all.map((i) => cluster.peers(i)))).every((n) => n === 3),
  );
  const ring = [...all].sort((x, y) => ((ids[x] as string) < (ids[y] as string) ? -1 : 1));
  frozen = ring[1] as number;
  const observer = ring[2] as number;
  const survivors = all.filter((i) => i !== frozen);
  const before = (await cluster.stats(observer)).liveness.suspicions.received;
  cluster.signal(frozen, 'SIGSTOP');
  await until(
    'every other node declares the frozen node gone',
    async () =>
      (await Promise.all(survivors.map((i) => cluster.events(i)))).every((e) =>
        e.gone.some((g) => g.peer === ids[frozen]),
      ),
    30_000,
  );
  const stats = await Promise.all(survivors.map((i) => cluster.stats(i)));
  assert.ok(
    stats.some((s) => s.liveness.suspicions.told >= 1),
    'a predecessor found it by its own ping and told the members',
  );
  assert.ok(
    (await cluster.stats(observer)).liveness.suspicions.received > before,
    'the member that does not watch it was told',
  );
});

test("a probe whose deadline this node's own blocked event loop let pass does not find a live peer gone", async (t) => {
  const a = await plainPeer('127.77.55.1', { ferryLiveness: true });
  const b = await plainPeer('127.77.55.2', { ferryLiveness: true });
  const stop = new AbortController();
  t.after(async () => {
    stop.abort();
    await Promise.all([a.stop(), b.stop()]);
  });
  const gone: string[] = [];
  const logs: unknown[] = [];
  const liveness = new Liveness({
    libp2p: a,
    log: { info: (o: unknown) => logs.push(o), error: (o: unknown) => logs.push(o) } as unknown as P2PLogger,
    quietMs: 60_000,
    timeoutMs: 300,
    skip: () => false,
    onUnresponsive: (peer) => gone.push(peer),
    stopSignal: stop.signal,
  });
  const conn = await a.dial(b.getMultiaddrs());
  liveness.onConnectionOpen(conn);
  const peer = b.peerId.toString();
  assert.equal(await liveness.check(peer), 'alive', 'a live peer answers an unhindered probe');
  // The probe's deadline passes while this process is busy: neither the ping nor its answer could
  // move. (A probe that gave up on its ping and sent another would have the connection aborted by
  // yamux when the first answer came.)
  const result = liveness.check(peer);
  const busyUntil = Date.now() + 1_600;
  while (Date.now() < busyUntil) {
    // busy: a process starved of CPU, or a long synchronous task
  }
  assert.equal(await result, 'alive', 'the stalled probe was sent again and answered');
  assert.ok(liveness.counts.stalledProbes >= 1, 'counted as a stalled probe');
  assert.equal(liveness.counts.unresponsive, 0);
  assert.deepEqual(gone, []);
  assert.equal(conn.status, 'open', 'the connection was kept');
});
