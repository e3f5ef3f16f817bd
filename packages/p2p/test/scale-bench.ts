// The provider store's footprint (issue 12) and the p2p layer's scale figures (issue 11,
// scale-figures.ts: clusters spread over several processes), printed as Markdown tables and the
// cluster table written to --out. Nothing asserts on time.
//   node --expose-gc packages/p2p/test/scale-bench.ts [--sizes 5,30,50,100] [--store-only] [--out FILE]
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Key } from 'interface-datastore/key';
import { CID } from 'multiformats/cid';
import * as Digest from 'multiformats/hashes/digest';
import { SortedMemoryDatastore } from '../src/datastore.ts';
import { ProviderStore } from '../src/provider-store.ts';
import { clusterFigures } from './scale-figures.ts';

const args = process.argv.slice(2);
const sizes = (args.includes('--sizes') ? (args[args.indexOf('--sizes') + 1] as string) : '5,30,50,100')
  .split(',')
  .map(Number);
const storeOnly = args.includes('--store-only');
const out = args.includes('--out') ? args[args.indexOf('--out') + 1] : undefined;
const rows: string[][] = [];

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

await storeFootprint();
console.log('| figure | before (kad-dht layout) | Ferry | target / ratio |');
console.log('| --- | --- | --- | --- |');
for (const r of rows) {
  console.log(`| ${r.join(' | ')} |`);
}
if (!storeOnly) {
  // the table so far is written after each size: a long run interrupted keeps its figures
  const table = await clusterFigures(sizes, (partial) => {
    if (out !== undefined) {
      writeFileSync(out, partial);
    }
  });
  console.log(table);
}
