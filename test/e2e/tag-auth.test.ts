/**
 * Issue 10, scenario 6 (last test): with first-pull sharing on and no credentials in the agent, a private
 * image nobody holds is a 404 at the agent and containerd pulls it with its own credentials.
 *
 * Issue 3, scenario 4: a private repository behind token auth (docker-registry `auth: token` with the
 * rig's ES256 issuer), two nodes in mode verify.
 *  - Without credentials for the registry, verify defers: a tag request is a 404, and the pull succeeds
 *    with containerd's own credentials (`ctr --user`).
 *  - With credentials (--upstream-credentials), verify resolves (Bearer token flow) and serves the tag.
 *  - A private manifest is never served by tag to a node that could not verify it while the upstream was up,
 *    although a peer holds it and advertises the tag.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import {
  AGENT_PORTS,
  type AgentHandle,
  type AuthRegistryHandle,
  allocateBlock,
  type BuiltImage,
  buildImage,
  type ContainerdHandle,
  ferryCli,
  pushImage,
  startAgent,
  startAuthRegistry,
  startContainerd,
  waitFor,
} from '../rig/index.ts';

const execFileP = promisify(execFile);
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';
const USER = 'ci';
const PASSWORD = 's3cret';

const block = allocateBlock();
const dir = mkdtempSync(join(tmpdir(), 'ferry-tag-auth-'));
const disposers: (() => Promise<unknown>)[] = [];
let upstream: AuthRegistryHandle;
let app: BuiltImage;
let fresh: BuiltImage;
let credsFile: string;
const nodes: { name: string; host: string; containerd: ContainerdHandle; agent?: AgentHandle }[] = [];

async function startNodeAgent(i: number, extra: string[] = []): Promise<AgentHandle> {
  const n = nodes[i]!;
  await n.agent?.stop();
  const agent = await startAgent({
    name: n.name,
    host: n.host,
    containerd: n.containerd,
    dir: join(dir, n.name, 'agent'),
    bootstrapPeers: nodes.filter((_, j) => j !== i).map((m) => `${m.host}:${AGENT_PORTS.router}`),
    // A generous DHT window for a loaded CI machine (the default 20ms is tuned for a quiet cluster).
    args: [`--mirrored-registries=${upstream.url}`, '--mirror-resolve-timeout=300ms', ...extra],
  });
  disposers.push(() => agent.stop());
  n.agent = agent;
  return agent;
}

before(async () => {
  upstream = await startAuthRegistry({
    host: block.upstream,
    dir: join(dir, 'upstream'),
    users: { [USER]: PASSWORD },
    auth: false,
  });
  disposers.push(() => upstream.dispose());
  app = await buildImage({ layers: [400_000] });
  fresh = await buildImage({ layers: [300_000] });
  // The rig pushes anonymously: push with auth off, then turn token auth on.
  await pushImage(upstream.url, 'private/app', 'v1', app);
  await pushImage(upstream.url, 'private/fresh', 'v1', fresh);
  await upstream.stop();
  await upstream.start({ auth: true });
  credsFile = join(dir, 'config.json');
  writeFileSync(credsFile, JSON.stringify(upstream.dockerConfig(USER)));
  for (const i of [1, 2]) {
    const name = `node${i}`;
    const host = block.node(i);
    mkdirSync(join(dir, name), { recursive: true });
    const containerd = await startContainerd({ name, host, dir: join(dir, name, 'containerd') });
    disposers.push(() => containerd.dispose());
    await execFileP(process.execPath, [
      ferryCli,
      'configure',
      `--hosts-dir=${containerd.hostsDir}`,
      `--mirror-targets=http://${host}:${AGENT_PORTS.registry}`,
      `--mirrored-registries=${upstream.url}`,
    ]);
    nodes.push({ name, host, containerd });
  }
  await Promise.all([startNodeAgent(0), startNodeAgent(1)]);
});

after(async () => {
  for (const d of disposers.reverse()) await d().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
  block.release();
});

const ref = () => `${upstream.host}/private/app:v1`;

async function headTag(i: number) {
  const res = await fetch(
    `${nodes[i]!.agent!.registryUrl}/v2/private/app/manifests/v1?ns=${encodeURIComponent(upstream.host)}`,
    { method: 'HEAD', headers: { accept: ACCEPT } },
  );
  return { status: res.status, digest: res.headers.get('docker-content-digest') ?? undefined };
}

async function pullWithUser(c: ContainerdHandle, user?: string) {
  const args = ['images', 'pull', '--hosts-dir', c.hostsDir, '--snapshotter', c.snapshotter, '--plain-http'];
  if (user !== undefined) args.push('--user', user);
  await c.ctr([...args, ref()], { timeoutMs: 60_000 });
}

test('4a. no credentials: verify defers (404) to containerd, whatever the cluster holds', async () => {
  const a = nodes[0]!;
  assert.deepEqual(await headTag(0), { status: 404, digest: undefined });
  // It really is private: containerd without credentials cannot pull it (through the agent or upstream).
  await assert.rejects(pullWithUser(a.containerd));
  assert.ok(
    (await a.agent!.metric('ferry_tag_resolutions_total', { mode: 'verify', outcome: 'deferred' })) >= 1,
  );
  assert.ok(
    (await a.agent!.metric('ferry_upstream_request_duration_seconds_count', { result: 'unauthorized' })) >= 1,
  );
  // Node 1 gets the image as a node with its own pull secret would: the agent's 404 sends containerd to
  // the upstream, where its credentials work.
  await pullWithUser(a.containerd, `${USER}:${PASSWORD}`);
  assert.equal((await a.containerd.client.getImage(ref()))?.target.digest, app.digest);
  // Node 1 itself still defers the tag, although it now holds the image.
  assert.deepEqual(await headTag(0), { status: 404, digest: undefined });
});

test('4c. a node without credentials never serves the private tag, though a peer holds and advertises it', async () => {
  // Node 1 holds the image now; node 2 finds its blobs through the DHT…
  await waitFor(
    async () =>
      (
        await fetch(
          `${nodes[1]!.agent!.registryUrl}/v2/private/app/blobs/${app.layers[0]!.digest}?ns=${encodeURIComponent(upstream.host)}`,
          { method: 'HEAD' },
        )
      ).status === 200,
    { timeoutMs: 60_000, intervalMs: 200, what: 'node2 finds the private layer on node1' },
  );
  // …but its tag request, which it cannot verify, is a 404.
  assert.deepEqual(await headTag(1), { status: 404, digest: undefined });
});

test('4b. with credentials configured, verify resolves through the token flow and serves the tag', async () => {
  const before = upstream.tokenRequests.filter((r) => r.account === USER && r.status === 200).length;
  await startNodeAgent(1, [`--upstream-credentials=${credsFile}`]);
  await nodes[1]!.agent!.waitReady();
  const answer = await waitFor(
    async () => {
      const r = await headTag(1);
      return r.status === 200 ? r : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 200, what: 'node2 resolves the private tag' },
  );
  assert.equal(answer.digest, app.digest);
  assert.ok(upstream.tokenRequests.filter((r) => r.account === USER && r.status === 200).length > before);
  assert.ok(
    (await nodes[1]!.agent!.metric('ferry_tag_resolutions_total', { mode: 'verify', outcome: 'upstream' })) >=
      1,
  );
  // And the pull works without containerd having any credentials: tag verified, bytes from the peer.
  await pullWithUser(nodes[1]!.containerd);
  assert.equal((await nodes[1]!.containerd.client.getImage(ref()))?.target.digest, app.digest);
});

test('6. first-pull sharing without agent credentials: a private blob is a 404, containerd pulls with its own', async () => {
  const a = nodes[0]!;
  await startNodeAgent(0, ['--first-pull']);
  await a.agent!.waitReady();
  const freshRef = `${upstream.host}/private/fresh:v1`;
  const args = [
    'images',
    'pull',
    '--hosts-dir',
    a.containerd.hostsDir,
    '--snapshotter',
    a.containerd.snapshotter,
  ];
  await a.containerd.ctr([...args, '--plain-http', '--user', `${USER}:${PASSWORD}`, freshRef], {
    timeoutMs: 60_000,
  });
  assert.equal((await a.containerd.client.getImage(freshRef))?.target.digest, fresh.digest);
  // The agent tried (pull-through), the upstream refused it, containerd fetched with its credentials.
  assert.equal(await a.agent!.metric('ferry_upstream_fetched_bytes_total'), 0);
  assert.equal(await a.agent!.metric('ferry_mirror_requests_total', { outcome: 'pull-through' }), 0);
  assert.ok((await a.agent!.metric('ferry_mirror_requests_total', { kind: 'blobs', outcome: 'miss' })) >= 1);
});
