// Measures advertise throughput: a 5-node in-process cluster on 127.77.200.x, node A advertises
// N random digests at a given concurrency, then node B looks every key up until it finds A.
// Prints figures only; asserts nothing about time.
//   node packages/p2p/test/measure-provide.ts [keys=5000] [concurrency=64,128] [nodes=5]
import { randomBytes } from 'node:crypto';
import PQueue from 'p-queue';
import { createP2PNode, type P2PNode } from '../src/index.ts';

const keyCount = Number(process.argv[2] ?? 5000);
const concurrencies = (process.argv[3] ?? '64,128').split(',').map(Number);
const nodeCount = Number(process.argv[4] ?? 5);

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MB`;
}

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error('timed out waiting for the cluster');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function runOnce(round: number, concurrency: number): Promise<void> {
  const nodes: P2PNode[] = [];
  try {
    const first = await createP2PNode({
      listen: { host: `127.77.${200 + round}.1`, port: 0 },
      registryPort: 5000,
      provideConcurrency: concurrency,
    });
    nodes.push(first);
    for (let i = 2; i <= nodeCount; i++) {
      nodes.push(
        await createP2PNode({
          listen: { host: `127.77.${200 + round}.${i}`, port: 0 },
          registryPort: 5000,
          provideConcurrency: concurrency,
          bootstrapPeers: [first.addresses[0] ?? ''],
        }),
      );
    }
    const [a, b] = nodes as [P2PNode, P2PNode];
    await waitFor(() => nodes.every((n) => n.peers().length === nodeCount - 1), 20_000);

    const keys = Array.from({ length: keyCount }, () => `sha256:${randomBytes(32).toString('hex')}`);
    const rssBefore = process.memoryUsage().rss;
    const t0 = performance.now();
    await a.advertise(keys);
    const tAdvertised = performance.now() - t0;

    let found = 0;
    const lookups = new PQueue({ concurrency: 64 });
    for (const key of keys) {
      lookups.add(async () => {
        for (let attempt = 0; attempt < 50; attempt++) {
          for await (const peer of b.lookup(key, { signal: AbortSignal.timeout(5_000) })) {
            if (peer.id === a.peerId) {
              found++;
              return;
            }
          }
        }
      });
    }
    await lookups.onIdle();
    const tFound = performance.now() - t0;
    const mem = process.memoryUsage();
    console.log(
      `nodes=${nodeCount} keys=${keyCount} concurrency=${concurrency}: advertise ${(tAdvertised / 1000).toFixed(1)} s, ` +
        `all found from B ${(tFound / 1000).toFixed(1)} s (${found}/${keyCount}), ` +
        `RSS ${mb(rssBefore)} -> ${mb(mem.rss)} (process, ${nodeCount} nodes), heap ${mb(mem.heapUsed)}`,
    );
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

for (const [i, c] of concurrencies.entries()) {
  await runOnce(i, c);
}
