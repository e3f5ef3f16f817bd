/**
 * Child process of memory.ts: N real Ferry P2P nodes (libp2p, kad-dht, noise) in one process, the
 * "other nodes" of the agent under test. Each listens on its own loopback address, bootstraps from the
 * agent's router and serves a minimal registry on the same address (HEAD of any blob: 200), so a lookup
 * through the agent's mirror path that finds one of them answers 200.
 *
 *   node test/bench/memory-peers.ts --bootstrap <ip:port> --hosts <ip,ip,…> [--router-port 5001] [--registry-port 5000]
 *
 * stdin, one command a line; stdout, one JSON answer a line:
 *   advertise <n>   every peer advertises n/N new random sha256 digests -> {"ok":true,"ms":…,"keys":[sample]}
 *   quit            stops every node and exits
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { createP2PNode, type P2PNode } from '@ferry/p2p';

const { values: args } = parseArgs({
  options: {
    bootstrap: { type: 'string' },
    hosts: { type: 'string' },
    'router-port': { type: 'string', default: '5001' },
    'registry-port': { type: 'string', default: '5000' },
  },
});
if (!args.bootstrap || !args.hosts) throw new Error('--bootstrap and --hosts are required');
const hosts = args.hosts.split(',');
const routerPort = Number(args['router-port']);
const registryPort = Number(args['registry-port']);

const servers: Server[] = [];
const nodes: P2PNode[] = [];
for (const host of hosts) {
  const server = createServer((req, res) => {
    const m = /\/blobs\/(sha256:[a-f0-9]{64})(?:\?.*)?$/.exec(req.url ?? '');
    if (req.method === 'HEAD' && m) {
      res.writeHead(200, { 'content-length': '1', 'docker-content-digest': m[1]! }).end();
    } else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(registryPort, host, resolve));
  servers.push(server);
  nodes.push(
    await createP2PNode({
      listen: { host, port: routerPort },
      registryPort,
      bootstrapPeers: [args.bootstrap],
    }),
  );
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
      sample.push(...keys.slice(0, Math.ceil(100 / nodes.length)));
      // In batches, as the tracker sends them, so one peer's provide queue stays bounded.
      for (let i = 0; i < keys.length; i += 1000) await node.advertise(keys.slice(i, i + 1000));
    }),
  );
  reply({ ok: true, ms: performance.now() - t0, keys: sample });
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
