/**
 * Scenario 10, a full disk is not an outage, on the rig (real containerd, real docker-registry, a real
 * agent) with a real full filesystem: a small tmpfs mounted for the test and filled to the last byte.
 * 1. --data-dir on the full disk at start: the agent starts and serves pulls, warns, exports
 *    ferry_data_dir_writable 0, and keeps the last-known digest of a tag in memory, so the tag still
 *    resolves while the upstream is down.
 * 2. The disk fills while the agent runs: the last-known database's writes fail; tag requests keep being
 *    answered, the agent keeps running, and the gauge turns 0.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
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

const MANIFEST_ACCEPT =
  'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

let cluster: Cluster;
let node: ClusterNode;
let app: BuiltImage;
const mounts: string[] = [];

/** A tmpfs of `size` at a new directory under the node's dir. */
function mountTmpfs(name: string, size: string): string {
  const dir = join(node.dir, name);
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

/** Writes zeros into `dir` until the filesystem is full: big chunks, then smaller, to the last byte. */
function fill(dir: string): void {
  const fd = openSync(join(dir, 'filler'), 'a');
  try {
    for (const size of [64 * 1024, 4096, 512, 1]) {
      const chunk = Buffer.alloc(size);
      for (;;) {
        try {
          writeSync(fd, chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

async function tagDigest(tag: string): Promise<{ status: number; digest: string | null }> {
  const res = await registryRequest(node, cluster, `/v2/demo/app/manifests/${tag}`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  await res.arrayBuffer();
  return { status: res.status, digest: res.headers.get('docker-content-digest') };
}

before(async () => {
  cluster = await startCluster({ nodes: 1, startAgents: false });
  node = cluster.nodes[0]!;
  app = await buildImage({ layers: [300_000] });
  await pushImage(cluster.upstream.url, 'demo/app', 'v1', app);
});
after(async () => {
  // Stop the agents first (they hold files on the mounts), detach the mounts, then remove the rest.
  for (const n of cluster?.nodes ?? []) await n.agent?.stop().catch(() => undefined);
  for (const m of mounts.reverse()) {
    try {
      execFileSync('umount', ['-l', m]);
    } catch {}
  }
  await cluster?.dispose();
});

test('10. a full --data-dir at start: the agent starts, serves, warns, and keeps last-known digests in memory', async () => {
  const full = mountTmpfs('full', '256k');
  fill(full);
  const agent = await node.startAgent([
    `--data-dir=${full}`,
    '--upstream-timeout=10s',
    `--mirrored-registries=${cluster.upstream.url}`,
  ]);
  assert.ok(agent.running());
  assert.equal(await agent.metric('ferry_data_dir_writable'), 0);
  assert.match(agent.logs(), /DATA DIR UNWRITABLE/);
  // It serves: the node's containerd pulls through it, and a tag resolves (upstream answer, kept in memory).
  await node.pull(cluster.ref('demo/app:v1'));
  const fresh = await tagDigest('v1');
  assert.equal(fresh.status, 200);
  assert.equal(fresh.digest, app.manifest.digest);
  // The upstream goes down: the tag still resolves, from the last-known digest held in memory.
  await cluster.upstream.stop();
  try {
    const outage = await tagDigest('v1');
    assert.equal(outage.status, 200);
    assert.equal(outage.digest, app.manifest.digest);
    assert.ok((await agent.metric('ferry_tag_resolutions_total', { outcome: 'last-known' })) >= 1);
  } finally {
    await cluster.upstream.start();
  }
  await agent.stop();
});

test('10b. the disk fills while the agent runs: tag requests are still answered, the gauge turns 0', async () => {
  const dir = mountTmpfs('filling', '16m');
  // A loaded test machine can take the upstream past the 1s default: nothing here is about time.
  const agent = await node.startAgent([
    `--data-dir=${dir}`,
    '--upstream-timeout=10s',
    `--mirrored-registries=${cluster.upstream.url}`,
  ]);
  assert.equal(await agent.metric('ferry_data_dir_writable'), 1);
  assert.equal((await tagDigest('v1')).status, 200, 'served while the disk has room');
  fill(dir);
  const tags = Array.from({ length: 40 }, (_, i) => `t${i}`);
  for (const tag of tags) await pushImage(cluster.upstream.url, 'demo/app', tag, app);
  // Each new tag's upstream answer is written to the last-known database; once the last page of its
  // files is used up, LevelDB's writes fail with ENOSPC.
  for (const tag of tags) {
    const r = await tagDigest(tag);
    assert.equal(r.status, 200, tag);
    assert.equal(r.digest, app.manifest.digest, tag);
    if ((await agent.metric('ferry_data_dir_writable')) === 0) break;
  }
  await waitFor(async () => (await agent.metric('ferry_data_dir_writable')) === 0, {
    timeoutMs: 10_000,
    what: 'ferry_data_dir_writable 0 after writes on a full disk',
  });
  assert.match(agent.logs(), /DATA DIR WRITE FAILED/);
  assert.ok(agent.running());
  assert.equal((await tagDigest('v1')).status, 200);
  await agent.stop();
});
