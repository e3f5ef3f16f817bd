/**
 * Child process of memory.ts: loads the agent's module groups one after another, in the agent's import
 * order, and prints after each (and after full GCs) `process.memoryUsage()` and V8's heap spaces as one
 * JSON line. Plain JavaScript on purpose: the first step is bare Node, without Node's TypeScript loader;
 * the second loads one trivial .ts file (the loader's own cost); then each group of dependencies; the
 * last step is the rest of the agent (its own packages, pinner, status page).
 *
 *   node --expose-gc --experimental-import-meta-resolve test/bench/memory-probe.mjs [--bundle]
 *
 * `--bundle`: bare Node, then the bundled build (packages/agent/dist/ferry.mjs) in one step.
 */
import { getHeapSpaceStatistics } from 'node:v8';

const pkg = (name) => new URL(`../../packages/${name}/package.json`, import.meta.url).href;
const from = (name, specs) => () => Promise.all(specs.map((s) => import(import.meta.resolve(s, pkg(name)))));

const sources = [
  ['bare Node', async () => undefined],
  ['type stripping (Node loads one trivial .ts file)', () => import('./memory-trivial.ts')],
  ['config & CLI: commander, yaml, zod, smol-toml', from('agent', ['commander', 'yaml', 'zod', 'smol-toml'])],
  ['HTTP & ops: fastify, pino, prom-client', from('agent', ['fastify', 'pino', 'prom-client'])],
  [
    'gRPC: grpc-js, proto-loader, protobufjs',
    from('containerd', ['@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs']),
  ],
  [
    'libp2p stack: libp2p, kad-dht, noise, yamux, tcp, identify, ping',
    from('p2p', [
      'libp2p',
      '@libp2p/kad-dht',
      '@chainsafe/libp2p-noise',
      '@chainsafe/libp2p-yamux',
      '@libp2p/tcp',
      '@libp2p/identify',
      '@libp2p/ping',
    ]),
  ],
  [
    'Ferry packages: containerd, p2p, registry, resolver, level',
    from('agent', ['@ferry/containerd', '@ferry/p2p', '@ferry/registry', '@ferry/resolver']),
  ],
  [
    'the agent itself: cli.ts (config, pinner, status page, …)',
    () => import('../../packages/agent/src/cli.ts'),
  ],
];

const bundle = [
  ['bare Node', async () => undefined],
  ['bundled CLI (dist/ferry.mjs, everything)', () => import('../../packages/agent/dist/ferry.mjs')],
];

async function settle() {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await new Promise((r) => setTimeout(r, 100));
  }
}

for (const [step, load] of process.argv.includes('--bundle') ? bundle : sources) {
  await load();
  await settle();
  const m = process.memoryUsage();
  const spaces = {};
  for (const s of getHeapSpaceStatistics())
    if (s.space_used_size > 0) spaces[s.space_name] = s.space_used_size;
  console.log(
    JSON.stringify({
      step,
      rss: m.rss,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      external: m.external,
      spaces,
    }),
  );
}
process.exit(0);
