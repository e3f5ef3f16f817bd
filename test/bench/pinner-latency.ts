/**
 * `node test/bench/pinner-latency.ts [--rounds 300] [--cold 100]`
 *
 * Admission latency of the pinner for a pod of 5 containers, over HTTPS with a keep-alive connection (as the
 * API server calls it), against a real docker-registry upstream on loopback and a LevelDB last-known store:
 *
 * - cold: 5 tags never resolved before (5 upstream HEADs + 5 synced writes per admission);
 * - warm, fresh-for 0: the same 5 tags, resolved before: still 5 upstream HEADs + 5 synced writes each time;
 * - warm, fresh-for 10s (the default): the same 5 tags answered from the upstream answer of < 10 s ago;
 * - outage: upstream stopped, 5 last-known digests from the database.
 *
 * Prints p50/p99/max per case. Asserts nothing. Stops everything it starts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createPinner, createPinnerServer } from '../../packages/pinner/src/index.ts';
import { makeCa } from '../../packages/pinner/test/helpers.ts';
import { createUpstreamClient, openLastKnownStore } from '../../packages/resolver/src/index.ts';
import { allocateBlock, buildImage, pushImage, startRegistry } from '../rig/index.ts';

const { values: args } = parseArgs({
  options: { rounds: { type: 'string', default: '300' }, cold: { type: 'string', default: '100' } },
});
const ROUNDS = Number(args.rounds);
const COLD = Number(args.cold);
const NAME = 'ferry-pinner.ferry.svc';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

const block = allocateBlock();
const dir = mkdtempSync(join(tmpdir(), 'ferry-pinner-bench-'));
const ca = makeCa(join(dir, 'tls'));
const pair = ca.issue('server', [NAME]);
const registry = await startRegistry({ host: block.upstream, dir: join(dir, 'upstream') });
try {
  const image = await buildImage({ layers: [1000] });
  const warmTags = ['w0', 'w1', 'w2', 'w3', 'w4'];
  const coldTags = Array.from({ length: COLD * 5 }, (_, i) => `c${i}`);
  const all = [...warmTags, ...coldTags];
  for (let i = 0; i < all.length; i += 20) {
    await Promise.all(all.slice(i, i + 20).map((tag) => pushImage(registry.url, 'bench/app', tag, image)));
  }

  async function run(label: string, freshForMs: number, tagsFor: (i: number) => string[], rounds: number) {
    const store = await openLastKnownStore(join(dir, 'db'));
    const upstream = createUpstreamClient({ endpoints: { [registry.host]: registry.url } });
    const pinner = createPinner({ upstream, store, clusterUrl: '', freshForMs, namespace: 'ferry' });
    const server = await createPinnerServer({ pinner, tlsCertFile: pair.cert, tlsKeyFile: pair.key });
    const { port } = await server.listen({ host: block.host(50), port: 0 });
    const agent = new Agent({ ca: ca.ca(), keepAlive: true, maxSockets: 1 });
    const post = (body: string) =>
      new Promise<number>((resolve, reject) => {
        const started = performance.now();
        const req = request(
          { host: block.host(50), port, path: '/mutate', method: 'POST', agent, servername: NAME },
          (res) => {
            res.resume();
            res.on('end', () =>
              res.statusCode === 200
                ? resolve(performance.now() - started)
                : reject(new Error(`HTTP ${res.statusCode}`)),
            );
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const review = (tags: string[], uid: number) =>
      JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: `u${uid}`,
          kind: { group: '', version: 'v1', kind: 'Pod' },
          namespace: 'apps',
          operation: 'CREATE',
          object: {
            metadata: { name: `p${uid}` },
            spec: {
              containers: tags.map((t, i) => ({ name: `c${i}`, image: `${registry.host}/bench/app:${t}` })),
            },
          },
        },
      });
    try {
      await post(review(warmTags, -1)); // connection set up, tags resolved once
      const times: number[] = [];
      for (let i = 0; i < rounds; i++) times.push(await post(review(tagsFor(i), i)));
      times.sort((a, b) => a - b);
      const f = (n: number) => n.toFixed(2).padStart(7);
      console.log(
        `| ${label.padEnd(40)} | ${String(rounds).padStart(6)} | ${f(percentile(times, 50))} | ${f(percentile(times, 99))} | ${f(times.at(-1)!)} |`,
      );
    } finally {
      agent.destroy();
      await server.close();
      await pinner.close();
      await upstream.close();
      await store.close();
    }
  }

  console.log(
    `pinner admission latency, pod of 5 containers, HTTPS keep-alive, ms (${new Date().toISOString()})`,
  );
  console.log('| case                                     | rounds |     p50 |     p99 |     max |');
  console.log('|---|---|---|---|---|');
  await run('cold DB (5 new tags: upstream + 5 writes)', 0, (i) => coldTags.slice(i * 5, i * 5 + 5), COLD);
  await run('warm DB, fresh-for 0 (upstream + writes)', 0, () => warmTags, ROUNDS);
  await run('warm DB, fresh-for 10s (default)', 10_000, () => warmTags, ROUNDS);
  await registry.stop();
  await run('upstream down: last-known from DB', 10_000, () => warmTags, ROUNDS);
} finally {
  await registry.dispose();
  ca.remove();
  rmSync(dir, { recursive: true, force: true });
  block.release();
}
