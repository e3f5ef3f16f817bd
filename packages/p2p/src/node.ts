import { lookup as dnsLookup } from 'node:dns/promises';
import { setMaxListeners } from 'node:events';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type Identify, identify } from '@libp2p/identify';
import type { PeerId, PeerInfo } from '@libp2p/interface';
import { type KadDHT, kadDHT, passthroughMapper, type SingleKadDHT } from '@libp2p/kad-dht';
import { type Ping, ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import type { CID } from 'multiformats/cid';
import PQueue from 'p-queue';
import pkg from '../package.json' with { type: 'json' };
import {
  type BootstrapTarget,
  formatAgentVersion,
  type HostPort,
  ipAndPort,
  ipMultiaddr,
  parseBootstrapDns,
  parseBootstrapPeer,
  parseRegistryPort,
  peerIdOf,
  pickHost,
} from './address.ts';
import { loadOrCreateKey } from './identity.ts';
import { keyToCid } from './keys.ts';
import type { P2PLogger, P2PNode, P2PNodeOptions, Peer } from './types.ts';

/** DHT protocol id: isolates Ferry clusters from IPFS and other DHTs. */
export const FERRY_KAD_PROTOCOL = '/ferry/kad/1.0.0';

/**
 * kad-dht 16 peers decode a DHT key with `CID.decode(multihash)`, which only works for sha2-256
 * multihashes (read as CIDv0). sha512 digests therefore cannot be advertised or found.
 */
const SHA2_256 = 0x12;

const DEFAULTS = {
  provideConcurrency: 64,
  recordValidityMs: 20 * 60_000,
  provideTimeoutMs: 30_000,
  dialTimeoutMs: 5_000,
  bootstrapRetryMs: 1_000,
  bootstrapRetryMaxMs: 30_000,
  /** While ready, keys whose provide failed are retried this often. */
  pendingRetryMs: 10_000,
  /** Housekeeping tick (bootstrap when empty, retry pending provides). */
  tickMs: 500,
  /** Bound for learning a provider's registry port through identify during a lookup. */
  identifyTimeoutMs: 2_000,
};

const silentLogger: P2PLogger = { debug() {}, info() {}, warn() {}, error() {} };

type Services = { identify: Identify; ping: Ping; dht: KadDHT };

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`p2p option ${name} must be an integer >= ${min} (got ${String(value)})`);
  }
  return value;
}

function validPort(name: string, value: number, allowZero: boolean): number {
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1) || value > 65535) {
    throw new Error(`p2p option ${name} must be a port number (got ${String(value)})`);
  }
  return value;
}

function parseList<T>(name: string, entries: string[] | undefined, parse: (entry: string) => T): T[] {
  return (entries ?? []).map((entry, i) => {
    try {
      return parse(entry);
    } catch (err) {
      throw new Error(`p2p option ${name}[${i}]: ${errorText(err)}`);
    }
  });
}

async function defaultResolver(name: string): Promise<string[]> {
  const answers = await dnsLookup(name, { all: true });
  return answers.map((a) => a.address);
}

/** Create and start a Ferry P2P node. Rejects with an error naming the bad option on invalid input. */
export async function createP2PNode(opts: P2PNodeOptions): Promise<P2PNode> {
  const log = opts.logger ?? silentLogger;
  if (isIP(opts.listen?.host ?? '') === 0) {
    throw new Error(`p2p option listen.host must be an IP address (got ${String(opts.listen?.host)})`);
  }
  validPort('listen.port', opts.listen.port, true);
  const registryPort = validPort('registryPort', opts.registryPort, false);
  if (opts.announceHost !== undefined && isIP(opts.announceHost) === 0) {
    throw new Error(`p2p option announceHost must be an IP address (got ${opts.announceHost})`);
  }
  const provideConcurrency = positiveInt(
    'provideConcurrency',
    opts.provideConcurrency,
    DEFAULTS.provideConcurrency,
  );
  const validity = positiveInt('recordValidityMs', opts.recordValidityMs, DEFAULTS.recordValidityMs, 1_000);
  const provideTimeoutMs = positiveInt('provideTimeoutMs', opts.provideTimeoutMs, DEFAULTS.provideTimeoutMs);
  const dialTimeoutMs = positiveInt('dialTimeoutMs', opts.dialTimeoutMs, DEFAULTS.dialTimeoutMs);
  const bootstrapRetryMs = positiveInt('bootstrapRetryMs', opts.bootstrapRetryMs, DEFAULTS.bootstrapRetryMs);
  const staticTargets = parseList('bootstrapPeers', opts.bootstrapPeers, parseBootstrapPeer);
  const dnsTargets = parseList('bootstrapDns', opts.bootstrapDns, parseBootstrapDns);
  const resolver = opts.resolver ?? defaultResolver;
  const version = opts.version ?? pkg.version;
  const privateKey = await loadOrCreateKey(opts.dataDir);

  const listenAddr = ipMultiaddr(opts.listen.host, opts.listen.port);
  const announceHost = opts.announceHost;
  // stream limits sized for the provide concurrency: each provide opens a stream per peer
  const streamLimit = Math.max(64, provideConcurrency * 4);

  const libp2p: Libp2p<Services> = await createLibp2p({
    start: false,
    privateKey,
    nodeInfo: { name: 'ferry', version, userAgent: formatAgentVersion(version, registryPort) },
    addresses: {
      listen: [listenAddr.toString()],
      ...(announceHost === undefined
        ? {}
        : { announceFilter: (addrs: Multiaddr[]) => announceAs(addrs, announceHost) }),
    },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: {
      // private cluster: many nodes may sit behind one IP (tests, SNAT); the default of 5 new
      // connections per second per host resets legitimate peers
      inboundConnectionThreshold: 200,
      maxIncomingPendingConnections: 64,
      maxConnections: 400,
      dialTimeout: dialTimeoutMs,
    },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: FERRY_KAD_PROTOCOL,
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        allowQueryWithZeroPeers: false,
        maxInboundStreams: streamLimit,
        maxOutboundStreams: streamLimit,
        reprovide: {
          validity,
          threshold: Math.floor(validity / 2),
          interval: Math.max(100, Math.min(Math.floor(validity / 10), 60_000)),
          concurrency: Math.min(provideConcurrency, 32),
        },
      }),
    },
  });

  const node = new FerryNode(libp2p, {
    log,
    registryPort,
    provideConcurrency,
    provideTimeoutMs,
    dialTimeoutMs,
    bootstrapRetryMs,
    staticTargets,
    dnsTargets,
    resolver,
    listenHost: opts.listen.host,
  });
  await node.start();
  return node;
}

function announceAs(addrs: Multiaddr[], host: string): Multiaddr[] {
  const out = new Map<string, Multiaddr>();
  for (const addr of addrs) {
    const parsed = ipAndPort(addr);
    if (parsed?.port === undefined) {
      continue;
    }
    const mapped = ipMultiaddr(host, parsed.port);
    out.set(mapped.toString(), mapped);
  }
  return [...out.values()];
}

interface FerryNodeInit {
  log: P2PLogger;
  registryPort: number;
  provideConcurrency: number;
  provideTimeoutMs: number;
  dialTimeoutMs: number;
  bootstrapRetryMs: number;
  staticTargets: BootstrapTarget[];
  dnsTargets: HostPort[];
  resolver: (name: string) => Promise<string[]>;
  listenHost: string;
}

interface IdentifiedPeer {
  agentVersion?: string;
  listenAddrs: Multiaddr[];
}

class FerryNode implements P2PNode {
  readonly peerId: string;
  private readonly libp2p: Libp2p<Services>;
  private readonly init: FerryNodeInit;
  private readonly log: P2PLogger;
  private readonly queue: PQueue;
  private readonly stopController = new AbortController();
  /** Keys the caller wants advertised (advertise minus withdraw). */
  private readonly wanted = new Set<string>();
  /** Keys whose provide reached at least one peer. */
  private readonly advertised = new Set<string>();
  /** Keys whose provide is queued or running. */
  private readonly inflight = new Map<string, Promise<void>>();
  /** Keys to provide again (failed, or waiting for peers). */
  private readonly pending = new Set<string>();
  /** What identify told us about connected peers. */
  private readonly identified = new Map<string, IdentifiedPeer>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private bootstrapping: Promise<void> | undefined;
  private bootstrapDelay: number;
  private nextBootstrapAt = 0;
  private nextPendingRetryAt = 0;
  private stopping: Promise<void> | undefined;

  constructor(libp2p: Libp2p<Services>, init: FerryNodeInit) {
    this.libp2p = libp2p;
    this.init = init;
    this.log = init.log;
    this.peerId = libp2p.peerId.toString();
    this.queue = new PQueue({ concurrency: init.provideConcurrency });
    this.bootstrapDelay = init.bootstrapRetryMs;
    // every queued provide listens on the stop signal
    setMaxListeners(Number.POSITIVE_INFINITY, this.stopController.signal);
  }

  get addresses(): string[] {
    return this.libp2p.getMultiaddrs().map((a) => a.toString());
  }

  async start(): Promise<void> {
    this.libp2p.addEventListener('peer:identify', (evt) => {
      const result = evt.detail;
      const entry: IdentifiedPeer = { listenAddrs: result.listenAddrs };
      if (result.agentVersion !== undefined) {
        entry.agentVersion = result.agentVersion;
      }
      this.identified.set(result.peerId.toString(), entry);
    });
    this.libp2p.addEventListener('peer:disconnect', (evt) => {
      this.identified.delete(evt.detail.toString());
    });
    await this.libp2p.start();
    this.log.info({ peerId: this.peerId, addresses: this.addresses }, 'p2p node started');
    this.nextBootstrapAt = Date.now() + this.bootstrapDelay;
    this.bootstrapping = this.bootstrap().finally(() => {
      this.bootstrapping = undefined;
    });
    this.schedule();
  }

  ready(): boolean {
    return this.routingTableSize() > 0;
  }

  private routingTableSize(): number {
    return (this.libp2p.services.dht as SingleKadDHT).routingTable.size;
  }

  peers(): { id: string; addresses: string[] }[] {
    const byPeer = new Map<string, Set<string>>();
    for (const conn of this.libp2p.getConnections()) {
      const id = conn.remotePeer.toString();
      let set = byPeer.get(id);
      if (set === undefined) {
        set = new Set();
        byPeer.set(id, set);
      }
      const known = this.identified.get(id)?.listenAddrs ?? [];
      for (const addr of known.length > 0 ? known : [conn.remoteAddr]) {
        set.add(addr.toString());
      }
    }
    return [...byPeer].map(([id, addrs]) => ({ id, addresses: [...addrs] }));
  }

  // ---------------------------------------------------------------- advertise / withdraw

  async advertise(keys: string[]): Promise<void> {
    if (this.stopping !== undefined) {
      return;
    }
    const waits: Promise<void>[] = [];
    for (const key of new Set(keys)) {
      let cid: CID;
      try {
        cid = keyToCid(key);
      } catch (err) {
        this.log.warn({ key, err: errorText(err) }, 'not advertising an invalid key');
        continue;
      }
      if (cid.multihash.code !== SHA2_256) {
        this.log.warn({ key }, 'not advertising: kad-dht 16 only carries sha2-256 multihash keys');
        continue;
      }
      this.wanted.add(key);
      const running = this.inflight.get(key);
      if (running !== undefined) {
        waits.push(running);
        continue;
      }
      if (this.advertised.has(key)) {
        continue;
      }
      this.pending.delete(key);
      waits.push(this.enqueue(key, cid));
    }
    await Promise.all(waits);
  }

  private enqueue(key: string, cid: CID): Promise<void> {
    const job = this.queue
      .add(() => this.provideOne(key, cid), { signal: this.stopController.signal })
      .catch((err: unknown) => {
        // p-queue rejects queued jobs when the node stops
        this.log.debug({ key, err: errorText(err) }, 'provide dropped');
      })
      .finally(() => {
        this.inflight.delete(key);
      });
    this.inflight.set(key, job);
    return job;
  }

  private async provideOne(key: string, cid: CID): Promise<void> {
    const dht = this.libp2p.services.dht;
    if (!this.wanted.has(key) || this.stopController.signal.aborted) {
      return;
    }
    if (!this.ready()) {
      // no peer to send to: keep it for when the routing table fills
      this.pending.add(key);
      return;
    }
    const signal = AbortSignal.any([
      AbortSignal.timeout(this.init.provideTimeoutMs),
      this.stopController.signal,
    ]);
    let stored = 0;
    try {
      for await (const event of dht.provide(cid, { signal })) {
        if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') {
          stored++;
        }
      }
    } catch (err) {
      if (!this.stopController.signal.aborted) {
        this.log.warn({ key, err: errorText(err) }, 'provide failed; will retry');
      }
    }
    if (!this.wanted.has(key)) {
      // withdrawn while in flight: provide() wrote a local record, take it back
      await dht.cancelReprovide(cid).catch(() => {});
      return;
    }
    if (stored > 0) {
      this.advertised.add(key);
    } else if (!this.stopController.signal.aborted) {
      this.pending.add(key);
    }
  }

  async withdraw(keys: string[]): Promise<void> {
    const dht = this.libp2p.services.dht;
    for (const key of new Set(keys)) {
      let cid: CID;
      try {
        cid = keyToCid(key);
      } catch {
        continue;
      }
      const wasKnown = this.wanted.delete(key);
      this.advertised.delete(key);
      this.pending.delete(key);
      if (!wasKnown || this.stopping !== undefined) {
        continue;
      }
      // an in-flight provide cancels its own record when it completes (see provideOne)
      try {
        await dht.cancelReprovide(cid);
      } catch (err) {
        this.log.warn({ key, err: errorText(err) }, 'cancelReprovide failed');
      }
    }
  }

  // ---------------------------------------------------------------- lookup

  async *lookup(key: string, opts: { signal: AbortSignal }): AsyncGenerator<Peer, void, undefined> {
    const cid = keyToCid(key);
    // peers reject any other multihash in DHT messages (they parse the key as a CIDv0/v1)
    if (cid.multihash.code !== SHA2_256 || opts.signal.aborted || this.stopping !== undefined) {
      return;
    }
    const signal = AbortSignal.any([opts.signal, this.stopController.signal]);
    const seen = new Set<string>();
    try {
      for await (const event of this.libp2p.services.dht.findProviders(cid, { signal })) {
        if (event.name !== 'PROVIDER') {
          continue;
        }
        for (const provider of event.providers) {
          const id = provider.id.toString();
          if (id === this.peerId || seen.has(id)) {
            continue;
          }
          seen.add(id);
          const peer = await this.toPeer(provider, signal);
          if (signal.aborted) {
            return;
          }
          if (peer !== undefined) {
            yield peer;
          }
        }
      }
    } catch (err) {
      if (!signal.aborted) {
        this.log.warn({ key, err: errorText(err) }, 'provider lookup failed');
      }
    }
  }

  /** Registry endpoint of a provider: IP from its addresses, port from its agent version. */
  private async toPeer(provider: PeerInfo, signal: AbortSignal): Promise<Peer | undefined> {
    const id = provider.id.toString();
    let addrs: Multiaddr[] = provider.multiaddrs;
    if (addrs.length === 0) {
      addrs = this.identified.get(id)?.listenAddrs ?? [];
    }
    if (addrs.length === 0) {
      addrs = await this.libp2p.peerStore
        .get(provider.id, { signal })
        .then((p) => p.addresses.map((a) => a.multiaddr))
        .catch(() => []);
    }
    if (addrs.length === 0) {
      addrs = this.libp2p.getConnections(provider.id).map((c) => c.remoteAddr);
    }
    const host = pickHost(addrs);
    if (host === undefined) {
      this.log.debug({ peer: id }, 'provider has no IP address');
      return undefined;
    }
    const port = (await this.registryPortOf(provider, signal)) ?? this.init.registryPort;
    return { id, host, port };
  }

  private async registryPortOf(provider: PeerInfo, signal: AbortSignal): Promise<number | undefined> {
    const id = provider.id;
    const cached = parseRegistryPort(this.identified.get(id.toString())?.agentVersion);
    if (cached !== undefined) {
      return cached;
    }
    try {
      const stored = await this.libp2p.peerStore.get(id, { signal });
      const agent = stored.metadata.get('AgentVersion');
      const port = parseRegistryPort(agent === undefined ? undefined : new TextDecoder().decode(agent));
      if (port !== undefined) {
        return port;
      }
    } catch {
      // not in the peer store yet
    }
    // unknown peer: connect and ask it (identify), briefly
    try {
      const bounded = AbortSignal.any([signal, AbortSignal.timeout(DEFAULTS.identifyTimeoutMs)]);
      const conn =
        this.libp2p.getConnections(id)[0] ??
        (await this.libp2p.dial(
          provider.multiaddrs.length > 0 ? provider.multiaddrs.map((a) => withPeerId(a, id)) : id,
          { signal: bounded },
        ));
      const result = await this.libp2p.services.identify.identify(conn, { signal: bounded });
      return parseRegistryPort(result.agentVersion);
    } catch (err) {
      this.log.debug({ peer: id.toString(), err: errorText(err) }, 'could not learn registry port');
      return undefined;
    }
  }

  // ---------------------------------------------------------------- bootstrap

  private schedule(): void {
    if (this.stopping !== undefined) {
      return;
    }
    this.timer = setTimeout(() => {
      this.tick();
      this.schedule();
    }, DEFAULTS.tickMs);
    this.timer.unref();
  }

  private tick(): void {
    const now = Date.now();
    if (!this.ready()) {
      if (this.bootstrapping === undefined && now >= this.nextBootstrapAt) {
        this.nextBootstrapAt = now + this.bootstrapDelay;
        this.bootstrapDelay = Math.min(this.bootstrapDelay * 2, DEFAULTS.bootstrapRetryMaxMs);
        this.bootstrapping = this.bootstrap().finally(() => {
          this.bootstrapping = undefined;
        });
      }
      return;
    }
    this.bootstrapDelay = this.init.bootstrapRetryMs;
    if (this.pending.size > 0 && now >= this.nextPendingRetryAt) {
      this.nextPendingRetryAt = now + DEFAULTS.pendingRetryMs;
      const keys = [...this.pending];
      this.pending.clear();
      this.advertise(keys).catch(() => {});
    }
  }

  /** Dial every bootstrap target (static and DNS) that is not this node. Never throws. */
  private async bootstrap(): Promise<void> {
    const targets: BootstrapTarget[] = [...this.init.staticTargets];
    await Promise.all(
      this.init.dnsTargets.map(async ({ host, port }) => {
        try {
          const ips = isIP(host) !== 0 ? [host] : await this.init.resolver(host);
          for (const ip of ips) {
            if (isIP(ip) !== 0) {
              targets.push({ addr: ipMultiaddr(ip, port), source: `${host}:${port}` });
            }
          }
        } catch (err) {
          this.log.warn({ name: host, err: errorText(err) }, 'bootstrap DNS lookup failed');
        }
      }),
    );
    if (targets.length === 0 || this.stopping !== undefined) {
      return;
    }
    const own = this.ownEndpoints();
    const connected = new Set(this.libp2p.getConnections().map((c) => c.remotePeer.toString()));
    const dials = targets.filter(({ addr }) => {
      const id = peerIdOf(addr);
      if (id !== undefined) {
        return id !== this.peerId && !connected.has(id);
      }
      const ep = ipAndPort(addr);
      return ep?.port === undefined || !own.has(`${ep.ip}|${ep.port}`);
    });
    this.log.debug({ targets: dials.map((t) => t.addr.toString()) }, 'bootstrapping');
    await Promise.all(
      dials.map(async ({ addr, source }) => {
        try {
          const signal = AbortSignal.any([
            AbortSignal.timeout(this.init.dialTimeoutMs),
            this.stopController.signal,
          ]);
          const conn = await this.libp2p.dial(addr, { signal });
          this.log.debug(
            { peer: conn.remotePeer.toString(), addr: addr.toString() },
            'bootstrap peer connected',
          );
        } catch (err) {
          if (!this.stopController.signal.aborted) {
            this.log.debug({ source, addr: addr.toString(), err: errorText(err) }, 'bootstrap dial failed');
          }
        }
      }),
    );
  }

  /** `ip|port` pairs that reach this node (listen and announced addresses, all interfaces if unspecified). */
  private ownEndpoints(): Set<string> {
    const out = new Set<string>();
    const ports = new Set<number>();
    for (const addr of this.libp2p.getMultiaddrs()) {
      const ep = ipAndPort(addr);
      if (ep?.port !== undefined) {
        out.add(`${ep.ip}|${ep.port}`);
        ports.add(ep.port);
      }
    }
    const hosts = [this.init.listenHost];
    if (this.init.listenHost === '0.0.0.0' || this.init.listenHost === '::') {
      for (const list of Object.values(networkInterfaces())) {
        for (const info of list ?? []) {
          hosts.push(info.address);
        }
      }
    }
    for (const host of hosts) {
      for (const port of ports) {
        out.add(`${host}|${port}`);
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- stop

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearTimeout(this.timer);
      this.stopController.abort();
      await this.queue.onIdle();
      await this.bootstrapping;
      await this.libp2p.stop();
      this.log.info({ peerId: this.peerId }, 'p2p node stopped');
    })();
    return this.stopping;
  }
}

function withPeerId(addr: Multiaddr, id: PeerId): Multiaddr {
  return peerIdOf(addr) === undefined ? addr.encapsulate(multiaddr(`/p2p/${id.toString()}`)) : addr;
}
