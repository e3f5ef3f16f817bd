// In-process clusters. Every node listens on its own loopback address 127.77.<test>.<n> (this file
// owns 127.77.1-19.x); port 0 unless the test needs a shared port, as in a cluster.
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import {
  createP2PNode,
  type P2PNode,
  type P2PNodeOptions,
  type Peer,
  verifyPeerSignature,
} from '../src/index.ts';
import { until } from './until.ts';

const digest = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function start(t: TestContext, opts: P2PNodeOptions): Promise<P2PNode> {
  const node = await createP2PNode(opts);
  t.after(() => node.stop());
  return node;
}

/** `ip:port` of a node's first address. */
function hostPort(node: P2PNode): string {
  const m = /^\/ip4\/([^/]+)\/tcp\/(\d+)/.exec(node.addresses[0] ?? '');
  assert.ok(m, `no ip4 address in ${node.addresses.join(',')}`);
  return `${m[1]}:${m[2]}`;
}

async function collect(node: P2PNode, key: string, timeoutMs = 5_000): Promise<Peer[]> {
  const out: Peer[] = [];
  for await (const peer of node.lookup(key, { signal: AbortSignal.timeout(timeoutMs) })) {
    out.push(peer);
  }
  return out;
}

async function cluster(t: TestContext, net: number, count: number, extra: Partial<P2PNodeOptions> = {}) {
  const first = await start(t, {
    listen: { host: `127.77.${net}.1`, port: 0 },
    registryPort: 5101,
    ...extra,
  });
  const nodes = [first];
  for (let i = 2; i <= count; i++) {
    nodes.push(
      await start(t, {
        listen: { host: `127.77.${net}.${i}`, port: 0 },
        registryPort: 5100 + i,
        bootstrapPeers: [hostPort(first)],
        ...extra,
      }),
    );
  }
  await until('routing tables', () => nodes.every((n) => n.ready()));
  return nodes;
}

test('ready() is false alone and becomes true once a static bootstrap peer is connected', async (t) => {
  const a = await start(t, { listen: { host: '127.77.1.1', port: 0 }, registryPort: 5001 });
  assert.equal(a.ready(), false);
  assert.deepEqual(a.peers(), []);
  assert.match(a.addresses[0] ?? '', new RegExp(`^/ip4/127\\.77\\.1\\.1/tcp/\\d+/p2p/${a.peerId}$`));
  // multiaddr with /p2p/<id>
  const b = await start(t, {
    listen: { host: '127.77.1.2', port: 0 },
    registryPort: 5002,
    bootstrapPeers: [a.addresses[0] ?? ''],
  });
  // plain ip:port, peer id learnt on connect
  const c = await start(t, {
    listen: { host: '127.77.1.3', port: 0 },
    registryPort: 5003,
    bootstrapPeers: [hostPort(a)],
  });
  await until('all ready', () => a.ready() && b.ready() && c.ready());
  await until('a sees b and c', () => a.peers().length === 2);
  const seen = a.peers().find((p) => p.id === b.peerId);
  assert.ok(seen);
  assert.ok(
    seen.addresses.some((addr) => addr.startsWith('/ip4/127.77.1.2/tcp/')),
    seen.addresses.join(','),
  );
});

test('joinLater: no bootstrap dial, not even a retry, until join(); then the node joins', async (t) => {
  const a = await start(t, { listen: { host: '127.77.1.4', port: 0 }, registryPort: 5004 });
  const b = await start(t, {
    listen: { host: '127.77.1.5', port: 0 },
    registryPort: 5005,
    bootstrapPeers: [hostPort(a)],
    bootstrapRetryMs: 100,
    joinLater: true,
  });
  // several retry periods: a node that bootstrapped (or retried) would be connected by now
  await new Promise((r) => setTimeout(r, 1_500));
  assert.equal(b.ready(), false);
  assert.deepEqual(a.peers(), []);
  b.join();
  b.join(); // idempotent
  await until('b joined through a', () => b.ready() && a.peers().some((p) => p.id === b.peerId));
});

test('DNS bootstrap dials every resolved address except our own, re-trying while alone', async (t) => {
  // One port for all nodes, distinct IPs: like a DaemonSet. Free on this machine right now (another
  // test run may share the loopback block).
  const port = await freePort('127.77.2.1');
  const asked: string[] = [];
  let answer: string[] = [];
  const resolver = async (name: string) => {
    asked.push(name);
    if (name !== 'ferry.test.svc') {
      throw new Error('NXDOMAIN');
    }
    return answer;
  };
  const opts = (i: number): P2PNodeOptions => ({
    listen: { host: `127.77.2.${i}`, port },
    registryPort: 5000,
    bootstrapDns: [`ferry.test.svc:${port}`, `missing.test.svc:${port}`],
    resolver,
    bootstrapRetryMs: 50,
  });
  const a = await start(t, opts(1));
  // nobody else yet (the answer holds only a itself): a keeps re-resolving and stays alone
  answer = ['127.77.2.1'];
  await until('re-bootstrap', () => asked.filter((n) => n === 'ferry.test.svc').length >= 3);
  assert.equal(a.ready(), false);
  answer = ['127.77.2.1', '127.77.2.2', '127.77.2.3'];
  const b = await start(t, opts(2));
  const c = await start(t, opts(3));
  await until('all ready', () => a.ready() && b.ready() && c.ready());
  await until('full mesh', () => [a, b, c].every((n) => n.peers().length === 2));
  for (const n of [a, b, c]) {
    assert.ok(!n.peers().some((p) => p.id === n.peerId), 'never connected to itself');
  }
});

test('advertise on A: lookup from B yields A with its IP and registry port; never self; deduped', async (t) => {
  const nodes = await cluster(t, 3, 5);
  const [a, b] = nodes as [P2PNode, P2PNode];
  const layer = digest(1);
  const tag = 'docker.io/library/nginx:1.27';
  await a.advertise([layer, tag, layer]);

  for (const key of [layer, tag]) {
    const found = await collect(b, key);
    assert.deepEqual(found, [{ id: a.peerId, host: '127.77.3.1', port: 5101 }], key);
  }
  // the provider itself: nothing (its own record is filtered)
  assert.deepEqual(await collect(a, layer), []);

  // a second provider: both found, each once, self excluded
  const c = nodes[2] as P2PNode;
  await c.advertise([layer]);
  // ADD_PROVIDER has no reply: B stores C's record a moment after C's advertise resolves.
  let fromB: Awaited<ReturnType<typeof collect>> = [];
  await until('both providers from B', async () => {
    fromB = await collect(b, layer);
    return fromB.length === 2;
  });
  assert.deepEqual(fromB.map((p) => p.id).sort(), [a.peerId, c.peerId].sort());
  assert.deepEqual(
    fromB.find((p) => p.id === c.peerId),
    { id: c.peerId, host: '127.77.3.3', port: 5103 },
  );
  const fromA = await collect(a, layer);
  assert.deepEqual(fromA, [{ id: c.peerId, host: '127.77.3.3', port: 5103 }]);

  // advertising again is a no-op that resolves; invalid keys are skipped, not thrown
  await a.advertise([layer, 'sha256:not-hex']);
  // sha512 keys cannot travel through kad-dht 16 (peers parse keys as CIDs): skipped, lookups end empty
  const sha512 = `sha512:${'ab'.repeat(64)}`;
  await a.advertise([sha512]);
  assert.deepEqual(await collect(b, sha512), []);
  await assert.rejects(async () => {
    for await (const _ of b.lookup('sha256:zz', { signal: AbortSignal.timeout(1000) })) {
      // never reached
    }
  }, /invalid sha256 digest/);
});

test('lookup of an absent key ends by itself: in a cluster, and at once when alone (no member to ask)', async (t) => {
  const nodes = await cluster(t, 4, 3);
  assert.deepEqual(await collect(nodes[1] as P2PNode, digest(404), 10_000), []);

  // below the mesh limit no kad query runs: with no member there is nothing to wait for
  const lonely = await start(t, { listen: { host: '127.77.4.9', port: 0 }, registryPort: 5000 });
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 10_000);
  const found: Peer[] = [];
  for await (const peer of lonely.lookup(digest(404), { signal: ctl.signal })) {
    found.push(peer);
  }
  clearTimeout(timer);
  assert.deepEqual(found, []);
  assert.equal(ctl.signal.aborted, false, 'the lookup ended before its deadline');
  // an already-aborted signal ends at once
  for await (const _ of lonely.lookup(digest(404), { signal: AbortSignal.abort() })) {
    assert.fail('nothing expected');
  }
});

test('withdraw stops re-providing: the key expires from peers while kept keys are refreshed', async (t) => {
  // validity 3 s: records are re-provided after 1.5 s and dropped by peers after 3 s (+ 0.3 s sweep)
  const nodes = await cluster(t, 5, 3, { recordValidityMs: 3_000 });
  const [a, b] = nodes as [P2PNode, P2PNode];
  const gone = digest(10);
  const kept = digest(11);
  await a.advertise([gone, kept]);
  assert.equal((await collect(b, gone)).length, 1);
  const withdrawnAt = Date.now();
  await a.withdraw([gone]);
  // Kademlia has no unprovide: peers still answer for the withdrawn key until it expires there
  await until('withdrawn key to expire on peers', async () => (await collect(b, gone)).length === 0, 15_000);
  const expiredAfter = Date.now() - withdrawnAt;
  // by then the kept key has outlived one validity period and is still served: it was re-provided
  await until('validity passed', () => Date.now() - withdrawnAt > 3_500);
  assert.deepEqual(
    (await collect(b, kept)).map((p) => p.id),
    [a.peerId],
    `kept key lost (withdrawn key expired after ${expiredAfter} ms)`,
  );
  // re-advertising a withdrawn key provides it again
  await a.advertise([gone]);
  assert.deepEqual(
    (await collect(b, gone)).map((p) => p.id),
    [a.peerId],
  );
});

test('advertise while alone resolves at once and the key is provided once peers appear', async (t) => {
  const a = await start(t, { listen: { host: '127.77.6.1', port: 0 }, registryPort: 5001 });
  const key = digest(600);
  await a.advertise([key]);
  const b = await start(t, {
    listen: { host: '127.77.6.2', port: 0 },
    registryPort: 5002,
    bootstrapPeers: [hostPort(a)],
  });
  await until('b finds a', async () => (await collect(b, key, 2_000)).some((p) => p.id === a.peerId), 30_000);
});

/** The first provider `node` finds for `key`, or undefined when the lookup ends without one. */
async function first(node: P2PNode, key: string, timeoutMs = 5_000): Promise<Peer | undefined> {
  for await (const peer of node.lookup(key, { signal: AbortSignal.timeout(timeoutMs) })) {
    return peer;
  }
  return undefined;
}

/** Run `fn` over `items`, `width` at a time. */
async function inBatches<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += width) {
    out.push(...(await Promise.all(items.slice(i, i + width).map(fn))));
  }
  return out;
}

test('batched advertise: 500 keys advertised on A are all found from C (4 nodes)', async (t) => {
  const nodes = await cluster(t, 9, 4);
  const [a, , c] = nodes as [P2PNode, P2PNode, P2PNode];
  await until('full mesh', () => nodes.every((n) => n.peers().length === 3));
  const keys = Array.from({ length: 500 }, (_, i) => digest(9_000 + i));
  await a.advertise(keys);
  const found = await inBatches(keys, 50, (key) => first(c, key));
  const missing = keys.filter((_, i) => found[i]?.id !== a.peerId);
  assert.deepEqual(missing, [], `${missing.length} keys not found from C`);
  assert.deepEqual(found[0], { id: a.peerId, host: '127.77.9.1', port: 5101 });
});

test('a peer that connects later gets the advertised keys pushed at once (no refresh needed)', async (t) => {
  const pushes: { peer?: string; keys?: number }[] = [];
  const logger = {
    debug() {},
    info(obj: object, msg?: string) {
      if (msg === 'pushed provider records to new peer') {
        pushes.push(obj);
      }
    },
    warn() {},
    error() {},
  };
  // default validity (20 min): no refresh can happen during the test
  const a = await start(t, { listen: { host: '127.77.10.1', port: 0 }, registryPort: 5101, logger });
  const b = await start(t, {
    listen: { host: '127.77.10.2', port: 0 },
    registryPort: 5102,
    bootstrapPeers: [hostPort(a)],
  });
  await until('a and b ready', () => a.ready() && b.ready());
  const keys = Array.from({ length: 500 }, (_, i) => digest(10_000 + i));
  await a.advertise(keys);

  const d = await start(t, {
    listen: { host: '127.77.10.4', port: 0 },
    registryPort: 5104,
    bootstrapPeers: [hostPort(a)],
  });
  await until('a pushed its keys to d', () => pushes.some((p) => p.peer === d.peerId && p.keys === 500));
  // with B gone, D's view (A only) is complete: it answers from the records it was pushed, without
  // a network query (a provider is only yielded while reachable, so A stays up)
  await b.stop();
  const found = await inBatches(keys, 50, (key) => first(d, key));
  const missing = keys.filter((_, i) => found[i]?.id !== a.peerId);
  assert.deepEqual(missing, [], `${missing.length} keys not found from D`);
  assert.equal(found[0]?.host, '127.77.10.1');
});

test('identity persists in <dataDir>/peer.key (0600); ephemeral without dataDir', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-p2p-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const dataDir = join(dir, 'state');
  const first = await createP2PNode({ listen: { host: '127.77.7.1', port: 0 }, registryPort: 5000, dataDir });
  const id = first.peerId;
  await first.stop();
  await first.stop(); // idempotent
  const info = await stat(join(dataDir, 'peer.key'));
  assert.equal(info.mode & 0o777, 0o600);
  const second = await start(t, { listen: { host: '127.77.7.1', port: 0 }, registryPort: 5000, dataDir });
  assert.equal(second.peerId, id);
  const ephemeral = await start(t, { listen: { host: '127.77.7.2', port: 0 }, registryPort: 5000 });
  assert.notEqual(ephemeral.peerId, id);
});

test('bad options are rejected with an error naming the option', async () => {
  const base: P2PNodeOptions = { listen: { host: '127.77.8.1', port: 0 }, registryPort: 5000 };
  await assert.rejects(createP2PNode({ ...base, listen: { host: 'localhost', port: 0 } }), /listen\.host/);
  await assert.rejects(createP2PNode({ ...base, registryPort: 0 }), /registryPort/);
  await assert.rejects(
    createP2PNode({ ...base, bootstrapPeers: ['127.0.0.1:1', 'node-b:4001'] }),
    /bootstrapPeers\[1\]/,
  );
  await assert.rejects(createP2PNode({ ...base, bootstrapDns: ['svc'] }), /bootstrapDns\[0\]/);
  await assert.rejects(createP2PNode({ ...base, recordValidityMs: 10 }), /recordValidityMs/);
});

test('Peer.host is the live connection address, never an announced one; sign/verify with the identity', async (t) => {
  // A announces an address that is not its own (a hostile or misconfigured peer)
  const a = await start(t, {
    listen: { host: '127.77.11.1', port: 0 },
    announceHost: '127.77.11.99',
    registryPort: 5111,
  });
  const bootstrap = `127.77.11.1:${/\/tcp\/(\d+)/.exec(a.addresses[0] ?? '')?.[1]}`;
  const b = await start(t, {
    listen: { host: '127.77.11.2', port: 0 },
    registryPort: 5112,
    bootstrapPeers: [bootstrap],
  });
  await until('connected', () => a.ready() && b.ready());
  const key = digest(11);
  await a.advertise([key]);
  let found: Peer[] = [];
  await until('A found from B', async () => {
    found = await collect(b, key);
    return found.length === 1;
  });
  assert.deepEqual(found, [{ id: a.peerId, host: '127.77.11.1', port: 5111 }]);
  assert.ok(
    a.addresses.every((addr) => addr.includes('127.77.11.99')),
    'A announces the other address',
  );

  const data = new TextEncoder().encode('GET /v2/x/blobs/sha256:00 1700000000');
  const sig = await a.sign(data);
  assert.equal(await verifyPeerSignature(a.peerId, data, sig), true);
  assert.equal(await verifyPeerSignature(b.peerId, data, sig), false, 'another peer id');
  assert.equal(await verifyPeerSignature(a.peerId, new TextEncoder().encode('other'), sig), false);
  assert.equal(await verifyPeerSignature(a.peerId, data, sig.subarray(1)), false, 'malformed signature');
  assert.equal(await verifyPeerSignature('not-a-peer-id', data, sig), false);
});
