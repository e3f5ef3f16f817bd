/**
 * Scenario 12, a bounded fuzz of the registry on a real agent (rig: real containerd, real
 * docker-registry, the cluster's network key): 5,000 requests from a seeded PRNG (deterministic), made
 * by mutating valid requests: paths (traversal, encodings, control bytes, long segments, other
 * digests), methods, headers (Range, Accept, X-Ferry-Mirrored, odd names) and ranges. Asserts 0 crashes
 * (the same process answers /healthz afterwards), 0 5xx, every error body with a body a valid OCI error,
 * and no answer quoting the mutated input (a marker token planted in every mutation).
 * The agent mirrors only the rig's upstream, so no mutation makes it connect anywhere else.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Pool } from 'undici';
import {
  type BuiltImage,
  buildImage,
  type Cluster,
  type ClusterNode,
  pushImage,
  startCluster,
} from '../rig/index.ts';

const REQUESTS = 5000;
const CONCURRENCY = 8;
const MARKER = 'zqfuzzmark';

let cluster: Cluster;
let node: ClusterNode;
let app: BuiltImage;

before(async () => {
  cluster = await startCluster({ nodes: 1, startAgents: false });
  node = cluster.nodes[0]!;
  app = await buildImage({ layers: [100_000] });
  await pushImage(cluster.upstream.url, 'demo/app', 'v1', app);
  await node.startAgent([`--mirrored-registries=${cluster.upstream.url}`]);
  await node.pull(cluster.ref('demo/app:v1'));
});
after(() => cluster?.dispose());

/** mulberry32: a small seeded PRNG, so every run sends the same requests. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('12. 5,000 mutated requests: no crash, no 5xx, OCI error bodies, nothing echoed', async () => {
  const rand = prng(12);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const int = (n: number) => Math.floor(rand() * n);
  const ns = encodeURIComponent(cluster.upstream.host);
  const layer = app.layers[0]!.digest;
  const valid = [
    '/v2/',
    '/v2/demo/app/manifests/v1',
    `/v2/demo/app/manifests/${app.manifest.digest}`,
    `/v2/demo/app/blobs/${layer}`,
    `/v2/demo/app/blobs/${app.config.digest}`,
    '/v2/demo/app/tags/list',
  ];
  const pieces = [
    '..',
    '%2e%2e',
    '%2F',
    '%00',
    '%ff',
    '//',
    '/./',
    '\\',
    '%5c',
    '?',
    '#',
    ';',
    '@',
    ':',
    '%',
    '%%',
    '\u00e9',
    '\u{1f600}',
    'A'.repeat(300),
    'sha256:',
    `sha256:${'0'.repeat(64)}`,
    `sha512:${'a'.repeat(128)}`,
    'manifests',
    'blobs',
    'uploads',
    '_catalog',
    'ns=',
    '&ns=10.0.0.1:80',
    '&ns=localhost:1',
  ];
  const mutatePath = (p: string): string => {
    let s = p;
    for (let n = 1 + int(3); n > 0; n--) {
      const at = int(s.length + 1);
      const op = int(4);
      const piece = `${pick(pieces)}${rand() < 0.5 ? MARKER : ''}`;
      if (op === 0) s = s.slice(0, at) + piece + s.slice(at);
      else if (op === 1) s = s.slice(0, at) + piece + s.slice(at + 1 + int(8));
      else if (op === 2) s = s.slice(0, at) + s.slice(at + 1 + int(8));
      else s = `${s}/${MARKER}${piece}`;
    }
    // The client sends what it is given, as bytes; keep it a request line it can send.
    try {
      return encodeURI(decodeURIComponentSafe(s)).replace(/^(?!\/)/, '/');
    } catch {
      return `${p}/${MARKER}`; // a lone surrogate (a cut emoji) cannot be encoded: keep the request sendable
    }
  };
  const ranges = [
    'bytes=0-0',
    'bytes=0-',
    'bytes=-1',
    'bytes=5-2',
    'bytes=999999999-',
    'bytes=0-1,5-9',
    'bytes=-0',
    `bytes=${MARKER}`,
    'items=0-5',
    'bytes=18446744073709551616-',
    'bytes= 1 - 2',
    'bytes=0-1'.repeat(50),
  ];
  const methods = ['GET', 'GET', 'GET', 'HEAD', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
  const accepts = [
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.v2+json',
    '*/*',
    `${MARKER}/${MARKER}`,
    'application/vnd.oci.image.index.v1+json;q=0.5, */*;q=0.1',
  ];

  const pool = new Pool(node.agent!.registryUrl, { connections: CONCURRENCY, pipelining: 1 });
  const startedAt = await node.agent!.metric('process_start_time_seconds');
  const failures: string[] = [];
  const statuses = new Map<number, number>();
  let sent = 0;
  const one = async (): Promise<void> => {
    const base = pick(valid);
    const path = rand() < 0.85 ? mutatePath(base) : base;
    const query = rand() < 0.9 ? `?ns=${ns}` : `?ns=${MARKER}.example:${int(65536)}`;
    const method = pick(methods);
    const headers: Record<string, string> = {};
    if (rand() < 0.4) headers.range = pick(ranges);
    if (rand() < 0.4) headers.accept = pick(accepts);
    if (rand() < 0.15) headers['x-ferry-mirrored'] = pick(['true', '1', MARKER]);
    if (rand() < 0.1) headers[`x-${MARKER}`] = MARKER.repeat(1 + int(100));
    if (rand() < 0.05) headers['if-none-match'] = `"${MARKER}"`;
    const what = `${method} ${path}${query} ${JSON.stringify(headers)}`;
    try {
      const res = await pool.request({
        method: method as 'GET',
        path: `${path}${query}`,
        headers,
        ...(method === 'POST' || method === 'PUT' || method === 'PATCH' ? { body: MARKER } : {}),
      });
      const body = await res.body.text();
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      if (res.statusCode >= 500) failures.push(`${res.statusCode}: ${what}: ${body.slice(0, 200)}`);
      if (res.statusCode >= 400 && method !== 'HEAD' && body.length > 0) {
        let ok = false;
        try {
          const j = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
          ok =
            Array.isArray(j.errors) &&
            j.errors.length > 0 &&
            j.errors.every((e) => typeof e.code === 'string' && typeof e.message === 'string');
        } catch {}
        if (!ok) failures.push(`not an OCI error (${res.statusCode}): ${what}: ${body.slice(0, 200)}`);
      }
      if (body.includes(MARKER) || JSON.stringify(res.headers).includes(MARKER))
        failures.push(`echoed input (${res.statusCode}): ${what}: ${body.slice(0, 200)}`);
    } catch (err) {
      // A request the client itself refuses to send (invalid characters) is not the agent's doing.
      const code = (err as { code?: string }).code;
      if (code !== 'UND_ERR_INVALID_ARG') failures.push(`transport error ${code}: ${what}`);
    }
  };
  const worker = async () => {
    while (sent < REQUESTS) {
      sent++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  await pool.close();
  process.stdout.write(`# statuses ${JSON.stringify(Object.fromEntries(statuses))}\n`);

  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failures`);
  // Still the same process, still healthy.
  assert.ok(node.agent!.running());
  assert.equal((await fetch(`${node.agent!.opsUrl}/healthz`)).status, 200);
  assert.equal(await node.agent!.metric('process_start_time_seconds'), startedAt);
});

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
