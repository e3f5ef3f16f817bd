// Content.Read (gRPC, several HTTP/2 flow-control windows) vs the file fast path on a ~64 MiB blob.
// Run: . scripts/env.sh && node packages/containerd/test/read-throughput.bench.ts   (prints a table; asserts only digests)
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  allocateBlock,
  buildImage,
  pushImage,
  startContainerd,
  startRegistry,
} from '../../../test/rig/index.ts';
import { createContainerdClient } from '../src/index.ts';

const MiB = 1024 * 1024;
const rounds = Number(process.env.ROUNDS ?? 7);
const cleanups: (() => unknown)[] = [];
const t = { after: (fn: () => unknown) => cleanups.push(fn) };
try {
  const block = allocateBlock();
  cleanups.push(() => block.release());
  const registry = await startRegistry({ host: block.upstream, t });
  const image = await buildImage({ layers: [64 * MiB], seed: 'containerd-read-bench' });
  await pushImage(registry.url, 'bench/read', 'v1', image);
  const node = await startContainerd({ name: 'bench', host: block.node(1), t });
  await node.pull(`${registry.host}/bench/read:v1`);
  const layer = image.layers[0]!;
  console.log(`blob ${layer.digest} ${layer.size} bytes, ${rounds} timed reads after 1 warm-up, MB/s (1e6)`);
  const configs: { label: string; contentPath?: string; window?: number }[] = [
    { label: 'file fast path (fs read stream)', contentPath: node.contentPath },
    { label: 'Content.Read, window 64 KiB (grpc-js default)', window: 65_535 },
    { label: 'Content.Read, window 1 MiB', window: MiB },
    { label: 'Content.Read, window 4 MiB (chosen default)', window: 4 * MiB },
    { label: 'Content.Read, window 16 MiB', window: 16 * MiB },
  ];
  console.log('| read path | min | p50 | max |\n|---|---|---|---|');
  for (const c of configs) {
    const client = createContainerdClient({
      socket: node.socket,
      ...(c.contentPath ? { contentPath: c.contentPath } : {}),
      ...(c.window ? { flowControlWindow: c.window } : {}),
    });
    const rates: number[] = [];
    for (let i = 0; i <= rounds; i++) {
      const t0 = process.hrtime.bigint();
      const h = createHash('sha256');
      let n = 0;
      for await (const chunk of (await client.open(layer.digest)) as AsyncIterable<Buffer>) {
        h.update(chunk);
        n += chunk.length;
      }
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      assert.equal(`sha256:${h.digest('hex')}`, layer.digest);
      assert.equal(n, layer.size);
      if (i > 0) rates.push(n / 1e6 / secs);
    }
    client.close();
    rates.sort((a, b) => a - b);
    const f = (x: number) => x.toFixed(0);
    console.log(
      `| ${c.label} | ${f(rates[0]!)} | ${f(rates[Math.floor(rates.length / 2)]!)} | ${f(rates.at(-1)!)} |`,
    );
  }
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
