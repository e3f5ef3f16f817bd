// One process of a multi-process test cluster (harness.ts): hosts several Ferry P2P nodes and runs
// the parent's commands on them, sent over the IPC channel as { id, op, node, ... } and answered
// with { id, ok, value } or { id, ok: false, error }. Nodes in several processes do not starve each
// other the way 25 nodes in one event loop do.
import { createP2PNode, type P2PLogger, type P2PNode } from '../../src/index.ts';

export interface StartArgs {
  host: string;
  bootstrap?: string[];
  dataDir?: string;
  pingTimeoutMs?: number;
  dialTimeoutMs?: number;
}

export interface NodeEvents {
  /** Peer ids this node failed to dial during a lookup ("provider not reachable"), with when. */
  unreachable: { peer: string; at: number }[];
  /** Peers this node declared dead, with when. */
  gone: { peer: string; at: number }[];
}

export interface LookupResult {
  ms: number;
  found: string[];
}

export type Command =
  | { id: number; op: 'start'; node: number; args: StartArgs }
  | { id: number; op: 'advertise'; node: number; keys: string[] }
  | { id: number; op: 'lookup'; node: number; key: string; timeoutMs: number; want?: string }
  | { id: number; op: 'peers'; node: number }
  | { id: number; op: 'events'; node: number }
  | { id: number; op: 'stats'; node: number }
  | { id: number; op: 'stop'; node: number };

const nodes = new Map<number, P2PNode>();
const events = new Map<number, NodeEvents>();

function logger(ev: NodeEvents): P2PLogger {
  return {
    debug(obj: object, msg?: string) {
      if (msg === 'provider not reachable') {
        ev.unreachable.push({ peer: (obj as { peer: string }).peer, at: Date.now() });
      }
    },
    info(obj: object, msg?: string) {
      if (msg === 'peer gone: its provider records dropped') {
        ev.gone.push({ peer: (obj as { peer: string }).peer, at: Date.now() });
      }
    },
    warn() {},
    error() {},
  };
}

function get(i: number): P2PNode {
  const node = nodes.get(i);
  if (node === undefined) {
    throw new Error(`node ${i} is not running in this worker`);
  }
  return node;
}

async function lookup(node: P2PNode, key: string, timeoutMs: number, want?: string): Promise<LookupResult> {
  const t0 = performance.now();
  const found: string[] = [];
  for await (const p of node.lookup(key, { signal: AbortSignal.timeout(timeoutMs) })) {
    found.push(p.id);
    if (want !== undefined && p.id === want) {
      break;
    }
  }
  return { ms: performance.now() - t0, found };
}

async function run(cmd: Command): Promise<unknown> {
  switch (cmd.op) {
    case 'start': {
      const ev: NodeEvents = { unreachable: [], gone: [] };
      const node = await createP2PNode({
        listen: { host: cmd.args.host, port: 0 },
        registryPort: 5000 + cmd.node,
        logger: logger(ev),
        ...(cmd.args.bootstrap === undefined ? {} : { bootstrapPeers: cmd.args.bootstrap }),
        ...(cmd.args.dataDir === undefined ? {} : { dataDir: cmd.args.dataDir }),
        ...(cmd.args.pingTimeoutMs === undefined ? {} : { pingTimeoutMs: cmd.args.pingTimeoutMs }),
        ...(cmd.args.dialTimeoutMs === undefined ? {} : { dialTimeoutMs: cmd.args.dialTimeoutMs }),
      });
      nodes.set(cmd.node, node);
      events.set(cmd.node, ev);
      return { peerId: node.peerId, addresses: node.addresses };
    }
    case 'advertise':
      await get(cmd.node).advertise(cmd.keys);
      return null;
    case 'lookup':
      return await lookup(get(cmd.node), cmd.key, cmd.timeoutMs, cmd.want);
    case 'peers':
      return get(cmd.node).peers().length;
    case 'events':
      return events.get(cmd.node) ?? { unreachable: [], gone: [] };
    case 'stats':
      return get(cmd.node).stats();
    case 'stop': {
      const node = nodes.get(cmd.node);
      nodes.delete(cmd.node);
      await node?.stop();
      return null;
    }
  }
}

process.on('message', (cmd: Command) => {
  run(cmd).then(
    (value) => process.send?.({ id: cmd.id, ok: true, value }),
    (err: unknown) =>
      process.send?.({ id: cmd.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
  );
});
process.on('disconnect', () => {
  Promise.allSettled([...nodes.values()].map((n) => n.stop())).then(() => process.exit(0));
});
process.send?.({ id: 0, ok: true, value: 'ready' });
