// Scale figures of the p2p layer (issue 11) and the provider store's footprint (issue 12), printed
// as a Markdown table. Nothing asserts on time. All nodes run in this one process, each on its own
// loopback address 127.78.<n>.x, so the figures include the cost of sharing one event loop.
//   node --expose-gc packages/p2p/test/scale-bench.ts [--sizes 5,30] [--store-only]
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Key } from 'interface-datastore/key';
import { CID } from 'multiformats/cid';
import * as Digest from 'multiformats/hashes/digest';
import { SortedMemoryDatastore } from '../src/datastore.ts';
import { createP2PNode, type P2PNode } from '../src/index.ts';
import { ProviderStore } from '../src/provider-store.ts';

const args = process.argv.slice(2);
const sizes = (args[args.indexOf('--sizes') + 1] ?? '5,30').split(',').map(Number);
const storeOnly = args.includes('--store-only');
const digest = () => `sha256:${randomBytes(32).toString('hex')}`;
const rows: string[][] = [];

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/** Heap bytes per record: 50,000 records from 20 peers + 10,000 own, kad-dht's layout vs Ferry's. */
async function storeFootprint(): Promise<void> {
  const peers = await Promise.all(
    Array.from({ length: 21 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))),
  );
  const keys = Array.from({ length: 60_000 }, () => randomBytes(32));
  const owner = (i: number) =>
    i < 10_000 ? (peers[0] as (typeof peers)[number]) : (peers[1 + (i % 20)] as (typeof peers)[number]);
  const measure = (fill: () => unknown): { heap: number; rss: number; keep: unknown } => {
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const rss0 = process.memoryUsage().rss;
    const keep = fill();
    gc();
    return {
      heap: process.memoryUsage().heapUsed - heap0,
      rss: process.memoryUsage().rss - rss0,
      keep,
    };
  };
  // before: kad-dht 16's Providers layout (`/dht/provider/<cid b32>/<peer b32>` → varint time) in
  // the sorted datastore Ferry used (a fresh varint time buffer per record, as kad-dht writes)
  const before = measure(() => {
    const ds = new SortedMemoryDatastore();
    const now = new Uint8Array([0xe8, 0xc9, 0xd5, 0xf8, 0xb3, 0x33]);
    keys.forEach((k, i) => {
      const cid = CID.createV1(0x55, Digest.create(0x12, k));
      ds.put(new Key(`/dht/provider/${cid.toString()}/${owner(i).toCID().toString()}`), Uint8Array.from(now));
    });
    return ds;
  });
  const after = measure(() => {
    const store = new ProviderStore({ validityMs: 20 * 60_000 });
    keys.forEach((k, i) => {
      store.add(Digest.create(0x12, k).bytes, owner(i));
    });
    return store;
  });
  const n = keys.length;
  rows.push(
    [
      'store: heap bytes per record (60,000 = 50,000 from 20 peers + 10,000 own)',
      `${Math.round(before.heap / n)}`,
      `${Math.round(after.heap / n)}`,
      `${(after.heap / before.heap).toFixed(2)}×`,
    ],
    [
      'store: RSS growth for the 60,000 records, MiB',
      (before.rss / 2 ** 20).toFixed(1),
      (after.rss / 2 ** 20).toFixed(1),
      `${(after.rss / Math.max(1, before.rss)).toFixed(2)}×`,
    ],
  );
  void before.keep;
  void after.keep;
}

async function lookupMs(node: P2PNode, key: string, want?: string): Promise<{ ms: number; found: string[] }> {
  const t0 = performance.now();
  const found: string[] = [];
  for await (const p of node.lookup(key, { signal: AbortSignal.timeout(5_000) })) {
    found.push(p.id);
    if (want !== undefined && p.id === want) {
      break;
    }
  }
  return { ms: performance.now() - t0, found };
}

async function cluster(size: number, net: number): Promise<void> {
  const nodes: P2PNode[] = [];
  const t0 = performance.now();
  for (let i = 0; i < size; i++) {
    nodes.push(
      await createP2PNode({
        listen: { host: `127.78.${net}.${i + 1}`, port: 0 },
        registryPort: 5000,
        ...(i === 0 ? {} : { bootstrapPeers: [nodes[0]?.addresses[0] as string] }),
      }),
    );
  }
  try {
    const deadline = Date.now() + 180_000;
    while (!nodes.every((n) => n.peers().length >= size - 1) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    const meshS = (performance.now() - t0) / 1000;
    const meshed = nodes.filter((n) => n.peers().length >= size - 1).length;
    // findable: one digest advertised on node 1, time until every other node finds it
    const [a] = nodes as [P2PNode];
    const key = digest();
    const tAdv = performance.now();
    await a.advertise([key]);
    const findable: number[] = [];
    await Promise.all(
      nodes.slice(1).map(async (n) => {
        while (performance.now() - tAdv < 60_000) {
          if ((await lookupMs(n, key, a.peerId)).found.includes(a.peerId)) {
            findable.push(performance.now() - tAdv);
            return;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      }),
    );
    // lookups of a held digest and misses, round-robin over the nodes
    const hits: number[] = [];
    const misses: number[] = [];
    let ok = 0;
    for (let i = 0; i < 200; i++) {
      const n = nodes[1 + (i % (size - 1))] as P2PNode;
      const h = await lookupMs(n, key, a.peerId);
      hits.push(h.ms);
      ok += h.found.includes(a.peerId) ? 1 : 0;
      misses.push((await lookupMs(n, digest())).ms);
    }
    // 10,000 digests from node 1: until the last node finds the last one
    const many = Array.from({ length: 10_000 }, digest);
    const tMany = performance.now();
    await a.advertise(many);
    const probe = many[many.length - 1] as string;
    let manyS = Number.NaN;
    while (performance.now() - tMany < 120_000) {
      const all = await Promise.all(nodes.slice(1).map((n) => lookupMs(n, probe, a.peerId)));
      if (all.every((r) => r.found.includes(a.peerId))) {
        manyS = (performance.now() - tMany) / 1000;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    rows.push(
      [
        `${size} nodes: mesh formed (nodes with every peer / seconds)`,
        '',
        `${meshed}/${size} in ${meshS.toFixed(1)} s`,
        '',
      ],
      [
        `${size} nodes: findable, one digest, p50 / p99 / max ms (${findable.length}/${size - 1} nodes)`,
        '',
        `${pct(findable, 50).toFixed(0)} / ${pct(findable, 99).toFixed(0)} / ${Math.max(...findable).toFixed(0)}`,
        'p99 ≤ 2,000',
      ],
      [
        `${size} nodes: lookup of a held digest p50 / p99 ms (${ok}/200 found)`,
        '',
        `${pct(hits, 50).toFixed(1)} / ${pct(hits, 99).toFixed(1)}`,
        '',
      ],
      [
        `${size} nodes: miss p50 / p99 ms`,
        '',
        `${pct(misses, 50).toFixed(1)} / ${pct(misses, 99).toFixed(1)}`,
        '',
      ],
      [
        `${size} nodes: 10,000 digests from node 1 findable everywhere, s`,
        '',
        manyS.toFixed(1),
        '≤ 10 at 50 nodes',
      ],
    );
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

await storeFootprint();
if (!storeOnly) {
  for (const [i, size] of sizes.entries()) {
    await cluster(size, 10 + i);
  }
}
console.log('| figure | before (kad-dht layout) | Ferry | target / ratio |');
console.log('| --- | --- | --- | --- |');
for (const r of rows) {
  console.log(`| ${r.join(' | ')} |`);
}
