/**
 * Scenario 8, slow readers hold no memory to speak of, on the rig (real containerd, real docker-registry,
 * a real agent run with the chart's environment): 300 clients ask for an 8 MiB blob the node holds and
 * never read a byte. The agent's resident memory stays under the chart's memory limit (512Mi) while they
 * hang on; once they go, their connections and file handles are closed, the memory comes back down to
 * within RELEASE_MARGIN of what the agent held before, and the agent serves a reader in full. Without
 * the agent's total buffer budget each stalled response kept two 1 MiB buffers (measured: 171 → 779 MiB;
 * with it, 317 MiB). Measured with the release after the burst: 128 → 265 MiB, 135 MiB once they went;
 * without it (Node defaults) the agent stayed at ~370 MiB; without the chart's MALLOC_MMAP_THRESHOLD_
 * (everything else as in production) at 268 MiB, and this test fails: the freed buffers stay in malloc's
 * heap.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import {
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  chartEnv,
  imageNodeArgs,
  pushImage,
  startCluster,
  waitFor,
} from '../rig/index.ts';

const READERS = 300;
/** Client source addresses: the agent takes at most 128 connections from one address. */
const SOURCES = 3;
const CHART_LIMIT = 512 * 1024 * 1024;
/** How far above its pre-burst figure the agent may stay once the readers are gone. */
const RELEASE_MARGIN = 48 * 1024 * 1024;

let cluster: Cluster;
let node: ClusterNode;
let app: BuiltImage;

before(async () => {
  cluster = await startCluster({
    nodes: 1,
    startAgents: false,
    agentEnv: chartEnv(),
    agentNodeArgs: imageNodeArgs(),
  });
  node = cluster.nodes[0]!;
  app = await buildImage({ layers: [8 << 20] });
  await pushImage(cluster.upstream.url, 'demo/big', 'v1', app);
  await node.startAgent([`--mirrored-registries=${cluster.upstream.url}`]);
  await node.pull(cluster.ref('demo/big:v1'));
});
after(() => cluster?.dispose());

/** A GET of the blob that is never read: the socket is paused before the answer comes. */
function stalledReader(source: string, port: number, host: string, path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, localAddress: source }, () => {
      s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
      resolve(s);
    });
    s.pause();
    s.once('error', reject);
  });
}

test('8. 300 stalled readers of a blob: RSS under the chart limit; once they go, connections closed, memory released and a reader served in full', async () => {
  const url = new URL(node.agent!.registryUrl);
  const path = `/v2/demo/big/blobs/${app.layers[0]!.digest}?ns=${encodeURIComponent(cluster.upstream.host)}`;
  const rss = () => node.agent!.metric('process_resident_memory_bytes');
  const fds = () => node.agent!.metric('process_open_fds');
  const baseRss = await rss();
  const baseFds = await fds();

  const sockets: Socket[] = [];
  for (let i = 0; i < READERS; i++) {
    const source = cluster.block.host(200 + (i % SOURCES));
    sockets.push(await stalledReader(source, Number(url.port), url.hostname, path));
  }
  // Every connection is accepted and every response has stalled: RSS stops moving.
  let last = -1;
  let peak = 0;
  await waitFor(
    async () => {
      const now = await rss();
      peak = Math.max(peak, now);
      const settled = (await fds()) >= baseFds + READERS && Math.abs(now - last) < 2 * 2 ** 20;
      last = now;
      return settled;
    },
    { timeoutMs: 60_000, intervalMs: 1000, what: 'the stalled responses to settle' },
  );
  peak = Math.max(peak, await rss());
  process.stdout.write(
    `# RSS before ${(baseRss / 2 ** 20).toFixed(0)} MiB, with ${READERS} stalled readers ${(peak / 2 ** 20).toFixed(0)} MiB\n`,
  );
  assert.ok(peak < CHART_LIMIT, `RSS ${peak} is over the chart's limit`);
  assert.ok(node.agent!.running());

  for (const s of sockets) s.destroy();
  await waitFor(async () => (await fds()) <= baseFds + 10, {
    timeoutMs: 30_000,
    what: 'the agent to close the connections',
  });
  // What they held goes back: RSS returns to within the margin of the pre-burst figure.
  let left = Number.POSITIVE_INFINITY;
  await waitFor(
    async () => {
      left = await rss();
      return left <= baseRss + RELEASE_MARGIN;
    },
    { timeoutMs: 30_000, intervalMs: 1000, what: 'the memory of the stalled responses to be released' },
  ).catch((err: Error) => {
    throw new Error(
      `${err.message}: RSS before ${(baseRss / 2 ** 20).toFixed(0)} MiB, after ${(left / 2 ** 20).toFixed(0)} MiB`,
    );
  });
  process.stdout.write(`# RSS once they went: ${(left / 2 ** 20).toFixed(0)} MiB\n`);
  // A reader that reads is served in full while nothing else is going on.
  const res = await fetch(`${node.agent!.registryUrl}${path}`);
  assert.equal(res.status, 200);
  assert.equal((await res.arrayBuffer()).byteLength, app.layers[0]!.size);
  assert.equal((await fetch(`${node.agent!.opsUrl}/healthz`)).status, 200);
});
