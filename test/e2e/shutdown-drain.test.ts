/**
 * SIGTERM drains: a blob transfer in flight when the agent gets SIGTERM (a slow reader of a multi-MB
 * layer) completes with every byte, new connections are refused meanwhile, the transfer's keep-alive
 * connection is closed once idle, and the process exits 0.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Agent, get, type IncomingMessage } from 'node:http';
import { after, before, test } from 'node:test';
import {
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  pushImage,
  startCluster,
  waitFor,
} from '../rig/index.ts';

let cluster: Cluster;
let image: BuiltImage;
let node: ClusterNode;

before(async () => {
  cluster = await startCluster({ nodes: 1, agentArgs: ['--shutdown-timeout=60s'] });
  node = cluster.nodes[0]!;
  image = await buildImage({ layers: [24 << 20] });
  await pushImage(cluster.upstream.url, 'demo/big', 'v1', image);
  await node.pull(cluster.ref('demo/big:v1'));
});
after(() => cluster?.dispose());

function open(url: string, agent: Agent | false = false): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent }, resolve);
    req.on('error', reject);
  });
}

test('a blob transfer in flight at SIGTERM completes, and the agent then exits 0', async () => {
  const layer = image.layers[0]!;
  const agent = node.agent!;
  const url = `${agent.registryUrl}/v2/demo/big/blobs/${layer.digest}?ns=${encodeURIComponent(cluster.upstream.host)}`;
  // A keep-alive connection, as containerd's: once the transfer ends it goes idle, and the drain must
  // close it (an idle keep-alive connection would hold the server open past the grace period).
  const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
  after(() => keepAlive.destroy());
  const res = await open(url, keepAlive);
  assert.equal(res.statusCode, 200);
  assert.equal(Number(res.headers['content-length']), layer.size);

  // A slow reader: take the first chunk, then stop reading, so the agent is stuck mid-body.
  const hash = createHash('sha256');
  let received = 0;
  const first = await new Promise<Buffer>((resolve) => res.once('data', resolve));
  res.pause();
  hash.update(first);
  received += first.length;
  assert.ok(received < layer.size, 'the transfer is still in flight');

  // SIGTERM, then waits for the exit; SIGKILL only after the agent's own grace period (a loaded machine
  // can take a while to read the rest).
  const stopped = agent.stop(70_000);
  // The agent stops accepting connections but stays up while our transfer runs.
  await waitFor(
    async () => {
      // A new connection each time (no pooled keep-alive socket), and only a refusal counts.
      const error = await open(`${agent.registryUrl}/v2/`).then(
        (r) => {
          r.resume();
          return undefined;
        },
        (err: NodeJS.ErrnoException) => err,
      );
      return error?.code === 'ECONNREFUSED';
    },
    { timeoutMs: 15_000, intervalMs: 50, what: 'the registry refuses new connections after SIGTERM' },
  );
  assert.equal(agent.running(), true, 'the agent waits for the transfer in flight');
  assert.match(agent.logs(), /shutting down/);

  // Read the rest: every byte arrives, and it is the right blob.
  res.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    received += chunk.length;
  });
  const ended = new Promise<void>((resolve, reject) => {
    res.once('end', resolve);
    res.once('error', reject);
    res.once('aborted', () => reject(new Error('the transfer was cut off')));
  });
  res.resume();
  await ended;
  assert.equal(received, layer.size);
  assert.equal(`sha256:${hash.digest('hex')}`, layer.digest);

  await stopped;
  assert.equal(agent.exitCode(), 0);
  assert.doesNotMatch(agent.logs(), /cut off at the end of the grace period/);
  assert.match(agent.logs(), /"msg":"stopped"/);
});
