/**
 * Issue 3, tag resolution that stays fresh and survives upstream outages, on one six-node rig
 * (real containerd, real docker-registry). Node policies:
 *   node1 A   verify (default)                     pulls app:v1 = D1 first
 *   node2 B   verify                               pulls after the re-push: D2
 *   node3     --default-tag-mode=cluster           pulls after the re-push: D1 (documented)
 *   node4     --default-tag-mode=upstream          pulls after the re-push: D2 from the upstream
 *   node5 C   verify                               pulls during the outage; restarted during it
 *   node6     --tag-policy=:latest$=upstream       scenario 5; pulls during the outage
 * Scenarios run in order: 1 reused tag, 5 filter, 2 outage, 3 restart during the outage.
 */
import assert from 'node:assert/strict';
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
import { registryRequest } from './helpers.ts';

let cluster: Cluster;
let d1: BuiltImage;
let d2: BuiltImage;
const node = (i: number) => cluster.nodes[i - 1] as ClusterNode;
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

before(async () => {
  cluster = await startCluster({ nodes: 6, startAgents: false });
  const common = [
    `--mirrored-registries=${cluster.upstream.url}`,
    // Generous for a loaded CI machine: DHT answers and peers' last-known answers come within it.
    '--mirror-resolve-timeout=300ms',
  ];
  const perNode: Record<number, string[]> = {
    3: ['--default-tag-mode=cluster'],
    4: ['--default-tag-mode=upstream'],
    6: ['--tag-policy=:latest$=upstream'],
  };
  [d1, d2] = await Promise.all([
    buildImage({ layers: [500_000, 40_000] }),
    buildImage({ layers: [300_000] }),
  ]);
  await Promise.all(cluster.nodes.map((n) => n.startAgent([...common, ...(perNode[n.index] ?? [])])));
  await Promise.all(cluster.nodes.map((n) => n.agent!.waitReady()));
});
after(() => cluster?.dispose());

async function imageDigest(n: ClusterNode, ref: string): Promise<string | undefined> {
  return (await n.containerd.client.getImage(ref))?.target.digest;
}

/** HEAD of a tag through a node's agent, as containerd asks it (or as a peer, with `mirrored`). */
async function headTag(n: ClusterNode, tag: string, mirrored = false) {
  const res = await registryRequest(n, cluster, `/v2/res/app/manifests/${tag}`, {
    method: 'HEAD',
    headers: { accept: ACCEPT },
    asPeer: mirrored,
  });
  return {
    status: res.status,
    digest: res.headers.get('docker-content-digest') ?? undefined,
    resolvedAt: res.headers.get('x-ferry-resolved-at') ?? undefined,
  };
}

test('1. reused tag: verify gets the new digest, cluster the old one (as documented), upstream the new one', async () => {
  await pushImage(cluster.upstream.url, 'res/app', 'v1', d1);
  await node(1).pull(cluster.ref('res/app:v1'));
  assert.equal(await imageDigest(node(1), cluster.ref('res/app:v1')), d1.digest);
  // The cluster-mode node sees A's tag key before the tag moves.
  await waitFor(async () => (await headTag(node(3), 'v1')).digest === d1.digest, {
    timeoutMs: 60_000,
    intervalMs: 200,
    what: 'node3 resolves v1 from the cluster',
  });

  await pushImage(cluster.upstream.url, 'res/app', 'v1', d2);
  await node(2).pull(cluster.ref('res/app:v1'));
  assert.equal(await imageDigest(node(2), cluster.ref('res/app:v1')), d2.digest, 'verify: fresh digest');
  await node(3).pull(cluster.ref('res/app:v1'));
  assert.equal(await imageDigest(node(3), cluster.ref('res/app:v1')), d1.digest, 'cluster: stale digest');
  await node(4).pull(cluster.ref('res/app:v1'));
  assert.equal(await imageDigest(node(4), cluster.ref('res/app:v1')), d2.digest, 'upstream: fresh digest');

  const b = node(2).agent!;
  assert.ok((await b.metric('ferry_tag_resolutions_total', { mode: 'verify', outcome: 'upstream' })) >= 1);
  assert.ok((await b.metric('ferry_upstream_request_duration_seconds_count', { result: 'resolved' })) >= 1);
  assert.ok(
    (await node(3).agent!.metric('ferry_tag_resolutions_total', { mode: 'cluster', outcome: 'cluster' })) >=
      1,
  );
  assert.ok(
    (await node(4).agent!.metric('ferry_tag_resolutions_total', { mode: 'upstream', outcome: 'deferred' })) >=
      1,
  );
  // A, asked by a peer, says when it resolved D1; B says D2, later.
  const a = await headTag(node(1), 'v1', true);
  const bAnswer = await headTag(node(2), 'v1', true);
  assert.equal(a.digest, d1.digest);
  assert.equal(bAnswer.digest, d2.digest);
  assert.ok(Number(bAnswer.resolvedAt) > Number(a.resolvedAt), `${bAnswer.resolvedAt} > ${a.resolvedAt}`);
  // The upstream-mode node answers no tag, even to peers (and advertises none).
  assert.equal((await headTag(node(4), 'v1', true)).status, 404);
});

test('5. filter :latest$=upstream: latest goes upstream at once while v1 resolves', async () => {
  await pushImage(cluster.upstream.url, 'res/app', 'latest', d1);
  const n6 = node(6);
  const latest = await headTag(n6, 'latest');
  assert.equal(latest.status, 404);
  const v1 = await headTag(n6, 'v1');
  assert.equal(v1.status, 200);
  assert.equal(v1.digest, d2.digest);
  await n6.pull(cluster.ref('res/app:latest'));
  assert.equal(await imageDigest(n6, cluster.ref('res/app:latest')), d1.digest);
  const agent = n6.agent!;
  assert.ok(
    (await agent.metric('ferry_tag_resolutions_total', { mode: 'upstream', outcome: 'deferred' })) >= 1,
  );
  assert.ok(
    (await agent.metric('ferry_tag_resolutions_total', { mode: 'verify', outcome: 'upstream' })) >= 1,
  );
});

let resolvedAtD2 = '';

test('2. outage: nodes pull v1 under verify and get the last digest the cluster resolved, from peers', async () => {
  resolvedAtD2 = (await headTag(node(2), 'v1', true)).resolvedAt ?? '';
  assert.ok(Number(resolvedAtD2) > 0);
  await cluster.upstream.stop();
  for (const n of [node(5), node(6)]) {
    // No upstream and no hang: ctr is killed (and the test fails) if the pull waits a minute.
    await n.pull(cluster.ref('res/app:v1'), { timeoutMs: 60_000 });
    assert.equal(await imageDigest(n, cluster.ref('res/app:v1')), d2.digest, `${n.name} got D2`);
    const agent = n.agent!;
    assert.ok(
      (await agent.metric('ferry_tag_resolutions_total', { mode: 'verify', outcome: 'last-known' })) >= 1,
    );
    assert.ok((await agent.metric('ferry_last_known_age_seconds_count')) >= 1);
    assert.ok((await agent.metric('ferry_peer_fetched_bytes_total')) > 0);
  }
});

test('3. restart during the outage: the agent still answers v1, and passes no peer-learned time on', async () => {
  const c = node(5).agent!;
  await c.stop();
  await c.start();
  // As a peer would ask: node 5 learned D2 from peers, so it answers from its own image with no resolution
  // time; a time it only heard from a peer is evidence for itself, never something it vouches for.
  const answer = await headTag(node(5), 'v1', true);
  assert.equal(answer.status, 200);
  assert.equal(answer.digest, d2.digest);
  assert.equal(answer.resolvedAt, '0');
  assert.ok(Number(resolvedAtD2) > 0);
  // And its own containerd still resolves v1 through it.
  const own = await headTag(node(5), 'v1');
  assert.equal(own.status, 200);
  assert.equal(own.digest, d2.digest);
  assert.ok((await c.metric('ferry_tag_resolutions_total', { mode: 'verify', outcome: 'last-known' })) >= 1);
});
