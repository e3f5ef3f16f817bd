// One process of a multi-process test cluster (harness.ts): hosts several Ferry P2P nodes and runs
// the parent's commands on them, sent over the IPC channel as { id, op, node, ... } and answered
// with { id, ok, value } or { id, ok: false, error }. Nodes in several processes do not starve each
// other the way 25 nodes in one event loop do. With `registry`, each node also runs Ferry's registry
// (@ferry/registry, its content in memory) on its own address, routed by the node: the mirror path
// (a manifest by digest from a peer) can be measured without containerd.
import { Agent, request } from 'node:http';
import { Session } from 'node:inspector/promises';
import { createMemoryContentSource, createRegistryServer, type MemoryContentSource } from '@ferry/registry';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { createP2PNode, createPeerAuth, type P2PLogger, type P2PNode } from '../../src/index.ts';
import { recordRequest, trace } from './timeline.ts';

export interface StartArgs {
  host: string;
  bootstrap?: string[];
  dataDir?: string;
  pingTimeoutMs?: number;
  dialTimeoutMs?: number;
  /** Run a registry on `host`:`registryPort(node)` for this node. */
  registry?: boolean;
  /** The cluster's network key (64 hex): a private network and peer HTTP auth, as the agent runs with one. */
  networkKey?: string;
}

/** The port of node i's registry (its p2p node advertises it). */
export const registryPort = (node: number) => 5000 + node;
/** The mirror's resolve timeout in the registries (the agent's default). */
export const MIRROR_RESOLVE_TIMEOUT_MS = 20;

/** A GET through a node's registry as its containerd sends it: status and time. */
export interface GetResult {
  ms: number;
  status: number;
}

export interface NodeEvents {
  /** Peer ids this node failed to dial during a lookup ("provider not reachable"), with when. */
  unreachable: { peer: string; at: number }[];
  /** Peers this node declared dead, with when and why. */
  gone: { peer: string; at: number; reason?: string }[];
  /** Peers declared dead that connected again, with when (they are alive from then on). */
  back: { peer: string; at: number }[];
  /** How often each log message was written (with its error's start, if any). */
  log: Record<string, number>;
  /** For a watched peer (op `watch`): when it first connected (and who dialled), was identified, sent a record. */
  watched?: { peer: string; connect?: number; inbound?: boolean; identify?: number; records?: number };
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
  | { id: number; op: 'store'; node: number; manifests: number }
  | { id: number; op: 'get'; node: number; digest: string; keepAlive?: boolean }
  | { id: number; op: 'cpu'; node: number }
  | { id: number; op: 'dial'; node: number; addr: string }
  | { id: number; op: 'profile'; node: number; start: boolean }
  | { id: number; op: 'watch'; node: number; peer: string }
  | { id: number; op: 'trace'; node: number; start: boolean }
  | { id: number; op: 'stop'; node: number };

const nodes = new Map<number, P2PNode>();
type Registry = Awaited<ReturnType<typeof createRegistryServer>>;
const registries = new Map<number, { app: Registry; source: MemoryContentSource; host: string }>();
const events = new Map<number, NodeEvents>();

function logger(ev: NodeEvents): P2PLogger {
  const count = (obj: object, msg?: string) => {
    const err = (obj as { err?: unknown }).err;
    const key = `${msg ?? ''}${typeof err === 'string' ? `: ${err.slice(0, 60)}` : ''}`;
    ev.log[key] = (ev.log[key] ?? 0) + 1;
  };
  return {
    debug(obj: object, msg?: string) {
      count(obj, msg);
      if (msg === 'provider not reachable') {
        ev.unreachable.push({ peer: (obj as { peer: string }).peer, at: Date.now() });
      }
    },
    info(obj: object, msg?: string) {
      count(obj, msg);
      if (msg === 'peer gone: its provider records dropped') {
        const { peer, reason } = obj as { peer: string; reason?: string };
        ev.gone.push({ peer, at: Date.now(), ...(reason === undefined ? {} : { reason }) });
      }
      if (msg === 'peer back: connected again after it was declared gone') {
        ev.back.push({ peer: (obj as { peer: string }).peer, at: Date.now() });
      }
    },
    warn: count,
    error: count,
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

function registryOf(i: number) {
  const reg = registries.get(i);
  if (reg === undefined) {
    throw new Error(`node ${i} runs no registry`);
  }
  return reg;
}

/** Put `count` small OCI manifests into node i's content and advertise their digests. */
async function store(i: number, count: number): Promise<string[]> {
  const { source } = registryOf(i);
  const digests = Array.from({ length: count }, (_, n) => {
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: `sha256:${'0'.repeat(64)}`,
        size: 2,
      },
      layers: [],
      annotations: { node: String(i), n: String(n), at: String(Date.now()) },
    });
    return source.add(manifest, 'application/vnd.oci.image.manifest.v1+json').digest;
  });
  await get(i).advertise(digests);
  return digests;
}

/** Per node: the client's kept-alive connections to its registry (containerd keeps its connections). */
const clients = new Map<number, Agent>();

/**
 * GET a manifest by digest from node i's registry, as its containerd does (`?ns=`, loopback): on a
 * kept-alive connection, or (`keepAlive` false) on a new connection per request.
 */
function getThrough(i: number, digest: string, keepAlive: boolean): Promise<GetResult> {
  const { host } = registryOf(i);
  let agent: Agent | false = false;
  if (keepAlive) {
    agent = clients.get(i) ?? new Agent({ keepAlive: true, maxSockets: 1 });
    clients.set(i, agent);
  }
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port: registryPort(i),
        path: `/v2/library/app/manifests/${digest}?ns=docker.io`,
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
        agent,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ ms: performance.now() - t0, status: res.statusCode ?? 0 }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * Trace a peer from node i's side (a restart): its first connection, identify and record after
 * now, into the node's events. Reads the node's private libp2p and provider store.
 */
function watch(i: number, peer: string): void {
  const node = get(i) as unknown as {
    libp2p: EventTarget;
    store: { add(key: Uint8Array, peer: { toString(): string }): boolean };
  };
  const ev = events.get(i) as NodeEvents;
  const w: NonNullable<NodeEvents['watched']> = { peer };
  ev.watched = w;
  node.libp2p.addEventListener('connection:open', (e) => {
    const conn = (e as CustomEvent<{ remotePeer: object; direction: string }>).detail;
    if (w.connect === undefined && conn.remotePeer.toString() === peer) {
      w.connect = Date.now();
      w.inbound = conn.direction === 'inbound';
    }
  });
  node.libp2p.addEventListener('peer:identify', (e) => {
    if (
      w.identify === undefined &&
      (e as CustomEvent<{ peerId: object }>).detail.peerId.toString() === peer
    ) {
      w.identify = Date.now();
    }
  });
  const add = node.store.add.bind(node.store);
  node.store.add = (key, from) => {
    if (w.records === undefined && from.toString() === peer) {
      w.records = Date.now();
    }
    return add(key, from);
  };
}

let session: Session | undefined;

/** Start the V8 CPU profiler of this process, or stop it and return the profile (JSON). */
async function profile(start: boolean): Promise<unknown> {
  if (start) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
    return null;
  }
  const s = session;
  session = undefined;
  if (s === undefined) {
    throw new Error('profiler not started');
  }
  const { profile: result } = await s.post('Profiler.stop');
  s.disconnect();
  return result;
}

async function run(cmd: Command): Promise<unknown> {
  switch (cmd.op) {
    case 'start': {
      const ev: NodeEvents = { unreachable: [], gone: [], back: [], log: {} };
      const keys = cmd.args.networkKey === undefined ? [] : [Buffer.from(cmd.args.networkKey, 'hex')];
      const node = await createP2PNode({
        networkKeys: keys,
        listen: { host: cmd.args.host, port: 0 },
        registryPort: registryPort(cmd.node),
        logger: logger(ev),
        ...(cmd.args.bootstrap === undefined ? {} : { bootstrapPeers: cmd.args.bootstrap }),
        ...(cmd.args.dataDir === undefined ? {} : { dataDir: cmd.args.dataDir }),
        ...(cmd.args.pingTimeoutMs === undefined ? {} : { pingTimeoutMs: cmd.args.pingTimeoutMs }),
        ...(cmd.args.dialTimeoutMs === undefined ? {} : { dialTimeoutMs: cmd.args.dialTimeoutMs }),
      });
      nodes.set(cmd.node, node);
      events.set(cmd.node, ev);
      // the listen address, once the transport reports it (a loaded machine can be late)
      for (let n = 0; n < 100 && node.addresses.length === 0; n++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      if (cmd.args.registry === true) {
        const source = createMemoryContentSource();
        const app = await createRegistryServer({
          source,
          router: node,
          mirrorResolveTimeoutMs: MIRROR_RESOLVE_TIMEOUT_MS,
          observer: { onRequest: (e) => recordRequest(cmd.node, e) },
          ...(keys.length === 0
            ? {}
            : {
                peerAuth: createPeerAuth({ keys, node: { peerId: node.peerId, sign: (d) => node.sign(d) } }),
              }),
        });
        await app.listen({ host: cmd.args.host, port: registryPort(cmd.node) });
        registries.set(cmd.node, { app, source, host: cmd.args.host });
      }
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
      return events.get(cmd.node) ?? { unreachable: [], gone: [], back: [], log: {} };
    case 'stats':
      return get(cmd.node).stats();
    case 'cpu': {
      // the whole process's CPU time (user + system) in ms, whichever node is named
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    }
    case 'dial':
      // the node's libp2p (private): a forced dial opens a second connection to a connected peer
      await (
        get(cmd.node) as unknown as {
          libp2p: { dial(addr: Multiaddr, opts: { force: boolean }): Promise<unknown> };
        }
      ).libp2p
        .dial(multiaddr(cmd.addr), { force: true })
        // closed at once as a duplicate, possibly before the dial returned
        .catch(() => {});
      return null;
    case 'profile':
      return await profile(cmd.start);
    case 'watch':
      watch(cmd.node, cmd.peer);
      return null;
    case 'trace':
      return trace(cmd.start);
    case 'store':
      return await store(cmd.node, cmd.manifests);
    case 'get':
      return await getThrough(cmd.node, cmd.digest, cmd.keepAlive === true);
    case 'stop': {
      const node = nodes.get(cmd.node);
      const reg = registries.get(cmd.node);
      nodes.delete(cmd.node);
      registries.delete(cmd.node);
      clients.get(cmd.node)?.destroy();
      clients.delete(cmd.node);
      await reg?.app.close();
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
  for (const agent of clients.values()) agent.destroy();
  Promise.allSettled([
    ...[...registries.values()].map((r) => r.app.close()),
    ...[...nodes.values()].map((n) => n.stop()),
  ]).then(() => process.exit(0));
});
process.send?.({ id: 0, ok: true, value: 'ready' });
