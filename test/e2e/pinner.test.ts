/**
 * The pinner end to end: a real docker-registry upstream, real containerd daemons and Ferry agents; node 1
 * runs `ferry agent --pinner` (HTTPS with a certificate from a CA this test makes with openssl), and the
 * last scenario runs `ferry pinner` as its own process. AdmissionReviews are POSTed as the API server would.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { applyPatch, type PatchOperation } from '../../packages/pinner/src/index.ts';
import { makeCa } from '../../packages/pinner/test/helpers.ts';
import { openLastKnownStore } from '../../packages/resolver/src/index.ts';
import {
  type BuiltImage,
  type BuiltIndex,
  buildImage,
  buildIndex,
  type Cluster,
  ferryCli,
  pushImage,
  spawnDaemon,
  startCluster,
  waitFor,
} from '../rig/index.ts';

const NAME = 'ferry-pinner.ferry.svc';
const PINNER_PORT = 8443;
const BUDGET_MS = 2000;
/** The chart's default webhook timeoutSeconds: an answer later than this is one the API server never sees. */
const WEBHOOK_TIMEOUT_MS = 5000;

let cluster: Cluster;
let ca: ReturnType<typeof makeCa>;
let tls: { cert: string; key: string };
let agent: Agent;
let app: BuiltImage;
let app2: BuiltImage;
let side: BuiltImage;
let init: BuiltImage;
let debug: BuiltIndex;
let other: BuiltImage;

type Review = { response: { uid: string; allowed: boolean; patch?: string; warnings?: string[] } };

function post(host: string, port: number, body: unknown): Promise<{ status: number; json: Review }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        path: '/mutate?timeout=5s',
        method: 'POST',
        agent,
        servername: NAME,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve({
              status: res.statusCode ?? 0,
              json: JSON.parse(Buffer.concat(chunks).toString('utf8')),
            });
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

let uidCounter = 0;
function podReview(spec: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const uid = `uid-${++uidCounter}`;
  return {
    uid,
    body: {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid,
        kind: { group: '', version: 'v1', kind: 'Pod' },
        resource: { group: '', version: 'v1', resource: 'pods' },
        namespace: 'apps',
        operation: 'CREATE',
        object: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: `p${uidCounter}`, namespace: 'apps' },
          spec,
        },
        ...extra,
      },
    },
  };
}

function patchOf(r: Review): PatchOperation[] {
  return r.response.patch ? JSON.parse(Buffer.from(r.response.patch, 'base64').toString('utf8')) : [];
}

function pinnedFrom(r: Review): Record<string, { digest: string; source: string }> {
  const op = patchOf(r).find((o) => o.path.startsWith('/metadata'));
  if (!op) return {};
  const v = op.value as string | Record<string, string>;
  return JSON.parse(typeof v === 'string' ? v : (v['ferry.dev/pinned'] as string));
}

const node1 = () => cluster.nodes[0]!;
const ref = (repoTag: string) => cluster.ref(repoTag);

async function admit(spec: Record<string, unknown>, port = PINNER_PORT, extra: Record<string, unknown> = {}) {
  const { uid, body } = podReview(spec, extra);
  const res = await post(node1().host, port, body);
  assert.equal(res.status, 200);
  assert.equal(res.json.response.uid, uid);
  assert.equal(res.json.response.allowed, true);
  return { review: res.json, pod: applyPatch(body.request.object, patchOf(res.json)) };
}

before(async () => {
  cluster = await startCluster({ nodes: 2, startAgents: false });
  ca = makeCa(join(cluster.nodes[0]!.dir, 'tls'));
  tls = ca.issue('pinner', [NAME, cluster.nodes[0]!.host]);
  agent = new Agent({ ca: ca.ca(), keepAlive: true, maxSockets: 32 });
  const pinnerArgs = [
    '--pinner',
    `--pinner-addr=${cluster.nodes[0]!.host}:${PINNER_PORT}`,
    `--pinner-tls-cert=${tls.cert}`,
    `--pinner-tls-key=${tls.key}`,
    `--pinner-budget=${BUDGET_MS}ms`,
    '--pinner-fresh-for=500ms',
  ];
  const upstreamArgs = [`--mirrored-registries=${cluster.upstream.url}`];
  await Promise.all([
    cluster.nodes[0]!.startAgent([...pinnerArgs, ...upstreamArgs]),
    cluster.nodes[1]!.startAgent(upstreamArgs),
  ]);
  [app, app2, side, init, other] = await Promise.all([
    buildImage({ layers: [20_000] }),
    buildImage({ layers: [20_000] }),
    buildImage({ layers: [20_000], mediaTypes: 'docker' }),
    buildImage({ layers: [20_000] }),
    buildImage({ layers: [30_000] }),
  ]);
  debug = await buildIndex({ layers: [10_000] });
  await pushImage(cluster.upstream.url, 'pin/app', 'v1', app);
  await pushImage(cluster.upstream.url, 'pin/side', 'v1', side);
  await pushImage(cluster.upstream.url, 'pin/init', 'v1', init);
  await pushImage(cluster.upstream.url, 'pin/debug', 'latest', debug);
  await pushImage(cluster.upstream.url, 'pin/other', 'v1', other);
});
after(async () => {
  agent?.destroy();
  await cluster?.dispose();
});

const fullSpec = () => ({
  initContainers: [{ name: 'init', image: ref('pin/init:v1') }],
  containers: [
    { name: 'app', image: ref('pin/app:v1') },
    { name: 'side', image: ref('pin/side:v1') },
  ],
  ephemeralContainers: [{ name: 'debug', image: ref('pin/debug') }],
});

let firstPod: Record<string, unknown>;

test('1: two containers, an init and an ephemeral container by tag are pinned to the upstream digests', async () => {
  const { review, pod } = await admit(fullSpec());
  const spec = pod.spec as ReturnType<typeof fullSpec>;
  assert.equal(spec.containers[0]!.image, `${ref('pin/app:v1')}@${app.digest}`);
  assert.equal(spec.containers[1]!.image, `${ref('pin/side:v1')}@${side.digest}`);
  assert.equal(spec.initContainers[0]!.image, `${ref('pin/init:v1')}@${init.digest}`);
  assert.equal(
    spec.ephemeralContainers[0]!.image,
    `${ref('pin/debug')}:latest@${debug.digest}`,
    'multi-arch: the index digest',
  );
  assert.deepEqual(
    Object.values(pinnedFrom(review)).map((p) => p.source),
    ['upstream', 'upstream', 'upstream', 'upstream'],
  );
  assert.equal(review.response.warnings, undefined);
  firstPod = pod;
  assert.equal(await node1().agent!.metric('ferry_pinner_resolutions_total', { source: 'upstream' }), 4);
});

test('2: after a re-push the next pod gets the new digest; the earlier pod is untouched', async () => {
  await pushImage(cluster.upstream.url, 'pin/app', 'v1', app2);
  // Within the freshness window (500 ms) the previous answer may still be reused: poll until the new one shows.
  const next = await waitFor(
    async () => {
      const { pod } = await admit({ containers: [{ name: 'app', image: ref('pin/app:v1') }] });
      const image = (pod.spec as { containers: { image: string }[] }).containers[0]!.image;
      return image.endsWith(app2.digest) ? image : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 100, what: 'the re-pushed digest' },
  );
  assert.equal(next, `${ref('pin/app:v1')}@${app2.digest}`);
  // The earlier pod keeps its digest: an UPDATE that does not change its images is not patched.
  const spec = firstPod.spec as ReturnType<typeof fullSpec>;
  assert.equal(spec.containers[0]!.image, `${ref('pin/app:v1')}@${app.digest}`);
  const { review } = await admit(structuredClone(spec), PINNER_PORT, {
    operation: 'UPDATE',
    oldObject: structuredClone(firstPod),
  });
  assert.deepEqual(patchOf(review), []);
});

test('3: upstream stopped → last-known digests, also after the pinner restarts', async () => {
  await cluster.upstream.stop();
  const check = async (sources: string[]) => {
    const { review, pod } = await admit(fullSpec());
    const spec = pod.spec as ReturnType<typeof fullSpec>;
    assert.equal(spec.containers[0]!.image, `${ref('pin/app:v1')}@${app2.digest}`);
    assert.equal(spec.containers[1]!.image, `${ref('pin/side:v1')}@${side.digest}`);
    assert.equal(spec.initContainers[0]!.image, `${ref('pin/init:v1')}@${init.digest}`);
    assert.equal(spec.ephemeralContainers[0]!.image, `${ref('pin/debug')}:latest@${debug.digest}`);
    for (const p of Object.values(pinnedFrom(review))) assert.ok(sources.includes(p.source), p.source);
  };
  // An upstream answer younger than --pinner-fresh-for may still be reused (reported as upstream).
  await check(['last-known', 'upstream']);
  await node1().agent!.stop();
  await node1().agent!.start();
  await check(['last-known']);
  assert.equal(await node1().agent!.metric('ferry_pinner_resolutions_total', { source: 'last-known' }), 4);
});

test('4: an image the pinner never resolved, held by another node, is pinned from the cluster', async () => {
  await cluster.upstream.start();
  await cluster.nodes[1]!.pull(ref('pin/other:v1'));
  await cluster.upstream.stop();
  // Node 2 advertises the tag; node 1's registry finds it through the DHT once the record has spread.
  const review = await waitFor(
    async () => {
      const { review } = await admit({ containers: [{ name: 'o', image: ref('pin/other:v1') }] });
      return patchOf(review).length > 0 ? review : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 250, what: 'pin/other:v1 pinned from the cluster' },
  );
  assert.equal(patchOf(review)[0]!.value, `${ref('pin/other:v1')}@${other.digest}`);
  assert.deepEqual(pinnedFrom(review)[ref('pin/other:v1')], { digest: other.digest, source: 'cluster' });
});

test('5: an image nobody knows, upstream down → allowed unpinned with a warning, within the budget', async () => {
  const started = performance.now();
  const { review } = await admit({ containers: [{ name: 'x', image: ref('pin/nobody:v1') }] });
  const elapsed = performance.now() - started;
  assert.deepEqual(patchOf(review), []);
  assert.equal(review.response.warnings?.length, 1);
  assert.match(review.response.warnings![0]!, /could not pin .*pin\/nobody:v1: upstream unavailable/);
  // A deadline, not a speed: past the webhook timeout the API server would have given up on us.
  assert.ok(elapsed < WEBHOOK_TIMEOUT_MS, `answered after ${Math.round(elapsed)} ms`);
  assert.ok((await node1().agent!.metric('ferry_pinner_resolutions_total', { source: 'unresolved' })) >= 1);
});

test('6: kill -9 during 1,000 admissions; every pinned answer returned is in the database', async () => {
  await cluster.upstream.start();
  const tags = Array.from({ length: 100 }, (_, i) => `t${i}`);
  // The first push links the blobs into the repository; concurrent uploads of one blob race in
  // docker-registry, so the other 99 tags only add manifests.
  await pushImage(cluster.upstream.url, 'pin/burst', tags[0]!, app);
  for (let i = 1; i < tags.length; i += 10) {
    await Promise.all(
      tags.slice(i, i + 10).map((tag) => pushImage(cluster.upstream.url, 'pin/burst', tag, app)),
    );
  }
  const dir = join(node1().dir, 'pinner-alone');
  mkdirSync(dir, { recursive: true });
  const port = PINNER_PORT + 1;
  const args = [
    ferryCli,
    'pinner',
    `--addr=${node1().host}:${port}`,
    `--tls-cert=${tls.cert}`,
    `--tls-key=${tls.key}`,
    `--data-dir=${dir}`,
    `--mirrored-registries=${cluster.upstream.url}`,
    `--cluster-url=${node1().agent!.registryUrl}`,
    '--fresh-for=0',
  ];
  const daemon = spawnDaemon(process.execPath, args, join(dir, 'pinner.log'));
  try {
    await waitFor(
      async () => {
        if (!daemon.running()) throw new Error(`ferry pinner exited:\n${daemon.logs()}`);
        return (await post(node1().host, port, { kind: 'x' }).catch(() => undefined))?.status === 400;
      },
      { timeoutMs: 20_000, what: 'ferry pinner listening' },
    );
    const answered = new Map<string, string>();
    let sent = 0;
    let killed = false;
    const worker = async () => {
      while (sent < 1000 && !killed) {
        const tag = tags[sent++ % tags.length]!;
        const { body } = podReview({ containers: [{ name: 'c', image: ref(`pin/burst:${tag}`) }] });
        const res = await post(node1().host, port, body).catch(() => undefined);
        if (res === undefined) continue; // the process died mid-request: no answer was returned
        const op = patchOf(res.json)[0];
        if (op) answered.set(tag, String(op.value));
        if (answered.size >= 1 && sent >= 300 && !killed) {
          killed = true;
          process.kill(daemon.pid!, 'SIGKILL');
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    assert.ok(killed, 'the pinner was killed mid-burst');
    await waitFor(() => !daemon.running(), { what: 'ferry pinner gone' });
    assert.ok(answered.size > 0);

    const store = await openLastKnownStore(join(dir, 'pinner'));
    try {
      for (const [tag, image] of answered) {
        const r = await store.get(cluster.upstream.host, 'pin/burst', tag);
        assert.ok(r, `answered ${tag} but it is not in the database`);
        assert.equal(`${ref(`pin/burst:${tag}`)}@${r.digest}`, image);
      }
    } finally {
      await store.close();
    }
  } finally {
    await daemon.stop(2000);
  }
});
