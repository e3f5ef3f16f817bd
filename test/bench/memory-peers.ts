/**
 * Child process of memory.ts: N real Ferry P2P nodes (libp2p, kad-dht, noise) in one process, the
 * "other nodes" of the agent under test, members of its cluster: they join under the cluster's network
 * key (private network) and authenticate HTTP as Ferry peers do (@ferry/p2p's createPeerAuth). Each
 * listens on its own loopback address, bootstraps from the agent's router and serves a minimal registry
 * on the same address: a HEAD of a blob it advertised, signed by the peer's request MAC, answers 200
 * with the node's signed proof; anything else 404 (401 unsigned). So a lookup through the agent's mirror
 * path answers 200 only when the agent holds the peer's record and the peer's answer checks out.
 *
 *   node test/bench/memory-peers.ts --bootstrap <ip:port> --hosts <ip,ip,…> --network-key-file <file>
 *     [--router-port 5001] [--registry-port 5000]
 *
 * stdin, one command a line; stdout, one JSON answer a line:
 *   advertise <n>   every peer advertises n/N new random sha256 digests, then waits until the nodes'
 *                   traffic is over -> {"ok":true,"ms":…,"settledMs":…,"keys":[sample],"unsigned":…}
 *   quit            stops every node and exits
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import {
  createP2PNode,
  createPeerAuth,
  type P2PNode,
  PEER_AUTH_HEADER,
  readNetworkKeyFile,
} from '@ferry/p2p';

const { values: args } = parseArgs({
  options: {
    bootstrap: { type: 'string' },
    hosts: { type: 'string' },
    'network-key-file': { type: 'string' },
    'router-port': { type: 'string', default: '5001' },
    'registry-port': { type: 'string', default: '5000' },
  },
});
if (!args.bootstrap || !args.hosts || !args['network-key-file'])
  throw new Error('--bootstrap, --hosts and --network-key-file are required');
const networkKeys = await readNetworkKeyFile(args['network-key-file']);
const hosts = args.hosts.split(',');
const routerPort = Number(args['router-port']);
const registryPort = Number(args['registry-port']);

const servers: Server[] = [];
const nodes: P2PNode[] = [];
/** Every digest the peers advertised (what a peer's registry holds). */
const held = new Set<string>();
let unsigned = 0;
for (const host of hosts) {
  const node = await createP2PNode({
    listen: { host, port: routerPort },
    registryPort,
    bootstrapPeers: [args.bootstrap],
    networkKeys,
  });
  const auth = createPeerAuth({
    keys: networkKeys,
    node: { peerId: node.peerId, sign: (d) => node.sign(d) },
  });
  const server = createServer((req, res) => {
    void (async () => {
      const m = /\/blobs\/(sha256:[a-f0-9]{64})(?:\?.*)?$/.exec(req.url ?? '');
      if (
        auth.verifyRequest({ method: req.method ?? '', pathAndQuery: req.url ?? '' }, req.headers) ===
        undefined
      ) {
        unsigned++;
        res.writeHead(401).end();
        return;
      }
      if (req.method !== 'HEAD' || !m || !held.has(m[1]!)) {
        res.writeHead(404).end();
        return;
      }
      const nonce = /nonce=([A-Za-z0-9_-]{22})/.exec(String(req.headers[PEER_AUTH_HEADER]))![1]!;
      const headers = { 'content-length': '1', 'docker-content-digest': m[1]! };
      const proof = await auth.signResponse({ nonce, status: 200, digest: m[1]!, length: '1' });
      res.writeHead(200, { ...headers, ...proof }).end();
    })().catch(() => res.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server.listen(registryPort, host, resolve));
  servers.push(server);
  nodes.push(node);
}

const reply = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);
const digest = () => `sha256:${randomBytes(32).toString('hex')}`;

async function advertise(total: number): Promise<void> {
  const t0 = performance.now();
  const per = Math.ceil(total / nodes.length);
  const sample: string[] = [];
  await Promise.all(
    nodes.map(async (node) => {
      const keys = Array.from({ length: per }, digest);
      for (const k of keys) held.add(k);
      sample.push(...keys.slice(0, Math.ceil(100 / nodes.length)));
      // In batches, as the tracker sends them, so one peer's provide queue stays bounded.
      for (let i = 0; i < keys.length; i += 1000) await node.advertise(keys.slice(i, i + 1000));
    }),
  );
  const ms = performance.now() - t0;
  // The nodes go on sending each other's records (every member gets every record) after `advertise`
  // resolved: until that traffic is over, this process answers late (the agent's peer requests time out).
  reply({ ok: true, ms, settledMs: await settle(), keys: sample, unsigned });
}

/** Waits (at most 5 min) until this process's event loop is quiet for two 1-second windows; ms waited. */
async function settle(): Promise<number> {
  const t0 = performance.now();
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  let quiet = 0;
  while (quiet < 2 && performance.now() - t0 < 300_000) {
    h.reset();
    await sleep(1_000);
    quiet = h.percentile(99) < 50e6 ? quiet + 1 : 0;
  }
  h.disable();
  return performance.now() - t0;
}

reply({ ready: true, peers: nodes.length });
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, n] = line.trim().split(/\s+/);
  try {
    if (cmd === 'advertise') await advertise(Number(n));
    else if (cmd === 'quit') break;
    else reply({ ok: false, error: `unknown command ${cmd}` });
  } catch (err) {
    reply({ ok: false, error: (err as Error).message });
  }
}
await Promise.all(nodes.map((n) => n.stop()));
for (const s of servers) s.close();
process.exit(0);
