/**
 * Tag-request latency: the time to first byte a tag HEAD (containerd's resolve step) costs under mode
 * `verify` (the upstream is asked first: a real docker-registry on loopback) against mode `cluster`
 * (answered from local content), and the upstream's own HEAD round-trip as the reference. 1,000 requests
 * each (after a warm-up), interleaved, one keep-alive connection per target. Prints a Markdown table.
 * Run: `. scripts/env.sh && node test/bench/tag-latency.ts [--requests 1000]`. Asserts nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, type IncomingMessage, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAgentTagPolicy, loadAgentConfig } from '@ferry/agent';
import type { TagMode } from '@ferry/interface';
import { manifestAcceptTypes } from '@ferry/oci';
import { createMemoryContentSource, createMemoryRouter, createRegistryServer } from '@ferry/registry';
import { allocateBlock, buildImage, pushImage, startRegistry } from '../rig/index.ts';

const args = process.argv.slice(2);
const at = args.indexOf('--requests');
const N = at >= 0 ? Number(args[at + 1]) : 1000;
const WARMUP = 50;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

async function main() {
  const block = allocateBlock();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-tags-'));
  const closers: (() => Promise<unknown>)[] = [];
  try {
    const upstream = await startRegistry({ host: block.upstream, dir: join(dir, 'upstream') });
    closers.push(() => upstream.dispose());
    const img = await buildImage({ layers: [4096] });
    await pushImage(upstream.url, 'bench/app', 'v1', img);
    const source = createMemoryContentSource();
    source.add(img.manifest.bytes, img.manifest.mediaType);
    source.add(img.config.bytes, img.config.mediaType);
    source.tag(upstream.host, 'bench/app', 'v1', img.digest);

    // The agent's own wiring: endpoint from --mirrored-registries, memory store (no data dir).
    const config = loadAgentConfig([`--mirrored-registries=${upstream.url}`, '--log-level=silent'], {}, {});
    const quiet = { warn: () => {}, info: () => {} };
    const tagPolicy = await createAgentTagPolicy(config, quiet);
    closers.push(() => tagPolicy.close());
    const urls: Record<string, string> = {};
    let host = 20;
    for (const mode of ['cluster', 'verify'] as TagMode[]) {
      const app = await createRegistryServer({
        source,
        router: createMemoryRouter(),
        tags: { ...tagPolicy.tags, modeFor: () => mode },
      });
      closers.push(() => app.close());
      const h = block.host(host++);
      await app.listen({ host: h, port: 0 });
      const port = (app.server.address() as { port: number }).port;
      urls[mode] = `http://${h}:${port}/v2/bench/app/manifests/v1?ns=${encodeURIComponent(upstream.host)}`;
    }
    urls.upstream = `${upstream.url}/v2/bench/app/manifests/v1`;

    const agents = Object.fromEntries(
      Object.keys(urls).map((k) => [k, new Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 })]),
    );
    closers.push(async () => {
      for (const a of Object.values(agents)) a.destroy();
    });
    /** HEAD, resolved at the response head (time to first byte). */
    const head = (url: string, agent: Agent) =>
      new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(url, { method: 'HEAD', agent, headers: { accept } }, resolve);
        req.on('error', reject);
        req.end();
      });
    const accept = manifestAcceptTypes.join(', ');
    const samples: Record<string, number[]> = { cluster: [], verify: [], upstream: [] };
    for (let i = 0; i < WARMUP + N; i++) {
      for (const target of ['cluster', 'verify', 'upstream']) {
        const t0 = performance.now();
        const res = await head(urls[target] as string, agents[target] as Agent);
        const ms = performance.now() - t0;
        res.resume();
        await new Promise((r) => res.once('end', r));
        if (res.statusCode !== 200 || res.headers['docker-content-digest'] !== img.digest)
          throw new Error(`${target}: ${res.statusCode} ${res.headers['docker-content-digest']}`);
        if (i >= WARMUP) samples[target]!.push(ms);
      }
    }
    const stats = Object.fromEntries(
      Object.entries(samples).map(([k, v]) => {
        const s = [...v].sort((a, b) => a - b);
        return [k, { p50: percentile(s, 50), p99: percentile(s, 99) }];
      }),
    ) as Record<string, { p50: number; p99: number }>;
    const f = (n: number) => n.toFixed(2);
    const c = stats.cluster!;
    const v = stats.verify!;
    const u = stats.upstream!;
    console.log(
      `Tag HEAD time to first byte, ${N} requests each (ms), upstream docker-registry on loopback\n`,
    );
    console.log('| request | p50 | p99 |');
    console.log('|---|---|---|');
    console.log(`| mode cluster (local content) | ${f(c.p50)} | ${f(c.p99)} |`);
    console.log(`| mode verify (upstream asked first) | ${f(v.p50)} | ${f(v.p99)} |`);
    console.log(`| upstream HEAD alone (one round-trip) | ${f(u.p50)} | ${f(u.p99)} |`);
    console.log(`| **added by verify** (verify − cluster) | ${f(v.p50 - c.p50)} | ${f(v.p99 - c.p99)} |`);
    console.log(
      `\nBudget (issue 3): added p99 ≤ upstream p99 + 5 ms = ${f(u.p99 + 5)} ms → ${v.p99 - c.p99 <= u.p99 + 5 ? 'within' : 'over'}`,
    );
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    block.release();
  }
}

await main();
