/**
 * Scenario 7, no client request makes the agent connect where it should not, on the rig (real
 * containerd, real docker-registry, a real agent). A sentinel listener on a loopback address counts
 * every connection it gets:
 * 1. All registries mirrored (the chart's default): `?ns=<sentinel ip:port>` and `?ns=localhost:<port>`,
 *    for a tag (verify) and for a blob (first-pull sharing on), never reach it; the client gets a 404
 *    whose text does not describe a network failure.
 * 2. A listed registry whose token challenge names the sentinel as its realm (plain HTTP, another
 *    host): the agent never asks the realm for a token.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  type AuthRegistryHandle,
  type Cluster,
  type ClusterNode,
  startAuthRegistry,
  startCluster,
} from '../rig/index.ts';

const NETWORK_WORDS = /refused|reset|timed? ?out|ECONN|EHOST|ENET|TLS|certificate|socket|DNS|ENOTFOUND/i;

let cluster: Cluster;
let node: ClusterNode;
let sentinel: Server;
let sentinelHost: string;
let sentinelPort: number;
let hits = 0;

before(async () => {
  cluster = await startCluster({ nodes: 1, startAgents: false });
  node = cluster.nodes[0]!;
  sentinelHost = cluster.block.host(150);
  sentinel = createServer((s) => {
    hits++;
    s.destroy();
  });
  await new Promise<void>((resolve) => sentinel.listen(0, sentinelHost, resolve));
  sentinelPort = (sentinel.address() as { port: number }).port;
});
after(async () => {
  sentinel?.close();
  await cluster?.dispose();
});

async function ask(path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${node.agent!.registryUrl}${path}`);
  return { status: res.status, body: await res.text() };
}

test('7a. ns= naming an IP literal or localhost: no connection, a 404 that describes no network failure', async () => {
  await node.startAgent(['--default-tag-mode=verify', '--first-pull=true']);
  const digest = `sha256:${'ab'.repeat(32)}`;
  for (const ns of [`${sentinelHost}:${sentinelPort}`, `localhost:${sentinelPort}`]) {
    for (const path of [`/v2/x/app/manifests/v1`, `/v2/x/app/blobs/${digest}`]) {
      const r = await ask(`${path}?ns=${encodeURIComponent(ns)}`);
      assert.equal(r.status, 404, `${path} ns=${ns}: ${r.body}`);
      assert.doesNotMatch(r.body, NETWORK_WORDS);
      assert.ok(!r.body.includes(String(sentinelPort)), 'the answer does not repeat the address');
    }
  }
  assert.equal(hits, 0, 'the sentinel saw a connection');
  await node.agent!.stop();
});

test('7b. a listed registry whose token realm is another host over plain HTTP: the realm is never contacted', async () => {
  const upstream: AuthRegistryHandle = await startAuthRegistry({
    host: cluster.block.host(4),
    dir: join(node.dir, 'auth-upstream'),
    realm: `http://${sentinelHost}:${sentinelPort}/token`,
  });
  try {
    await node.startAgent(['--default-tag-mode=verify', `--mirrored-registries=${upstream.url}`]);
    const r = await ask(`/v2/x/app/manifests/v1?ns=${encodeURIComponent(upstream.host)}`);
    assert.equal(r.status, 404, r.body);
    assert.doesNotMatch(r.body, NETWORK_WORDS);
    // The agent did ask the registry (its challenge named the realm), and stopped there.
    assert.ok((await node.agent!.metric('ferry_upstream_request_duration_seconds_count')) >= 1);
    assert.equal(hits, 0, 'the realm (the sentinel) saw a connection');
  } finally {
    await node.agent?.stop();
    await upstream.dispose();
  }
});
