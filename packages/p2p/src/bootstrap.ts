// Bootstrap: dial the static and DNS bootstrap targets at start, and again with exponential backoff
// while the routing table is empty. kad-dht itself only fills its routing table from connections.
// The targets are dialled in random order, `BOOTSTRAP_DIAL_CONCURRENCY` at a time, and a target that
// connected meanwhile (it dialled us) is skipped. With a DNS name or a static list naming every node,
// all nodes starting together once dialled every other at once: each handshake competed with all the
// others (and with each one's twin in the other direction), so the first peer, the one that makes a
// node ready, came late for everyone.
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Libp2p } from 'libp2p';
import { type BootstrapTarget, type HostPort, ipAndPort, ipMultiaddr, peerIdOf } from './address.ts';
import { DEFAULTS, errorText } from './options.ts';
import type { P2PLogger } from './types.ts';

/** Bootstrap dials in flight per round. */
const BOOTSTRAP_DIAL_CONCURRENCY = 4;

export interface BootstrapInit {
  libp2p: Libp2p;
  log: P2PLogger;
  staticTargets: BootstrapTarget[];
  dnsTargets: HostPort[];
  resolver: (name: string) => Promise<string[]>;
  listenHost: string;
  dialTimeoutMs: number;
  bootstrapRetryMs: number;
  /** Whether a connected peer listens on `ip`:`port` (from identify): a target without a peer id is skipped then. */
  connectedAt: (ip: string, port: number) => boolean;
}

export class Bootstrapper {
  private readonly init: BootstrapInit;
  private readonly stopController = new AbortController();
  private running: Promise<void> | undefined;
  private delay: number;
  private nextAt = 0;
  private started = false;

  constructor(init: BootstrapInit) {
    this.init = init;
    this.delay = init.bootstrapRetryMs;
  }

  /** First round (once; later rounds come from tick). */
  start(): void {
    if (this.started || this.stopController.signal.aborted) {
      return;
    }
    this.started = true;
    this.nextAt = Date.now() + this.delay;
    this.run();
  }

  /** While not ready, bootstrap again with a doubling delay (up to 30 s); reset once ready. */
  tick(now: number, ready: boolean): void {
    if (!this.started) {
      return;
    }
    if (ready) {
      this.delay = this.init.bootstrapRetryMs;
      return;
    }
    if (this.running === undefined && now >= this.nextAt) {
      this.nextAt = now + this.delay;
      this.delay = Math.min(this.delay * 2, DEFAULTS.bootstrapRetryMaxMs);
      this.run();
    }
  }

  async stop(): Promise<void> {
    this.stopController.abort();
    await this.running;
  }

  private run(): void {
    this.running = this.bootstrap().finally(() => {
      this.running = undefined;
    });
  }

  /** Every bootstrap target: the static ones and each address the DNS names resolve to. */
  private async targets(): Promise<BootstrapTarget[]> {
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
          // `name` is the logger's own key: the DNS name goes under `host`
          this.init.log.warn({ host, err: errorText(err) }, 'bootstrap DNS lookup failed');
        }
      }),
    );
    return targets;
  }

  /** Dial every bootstrap target (static and DNS) that is not this node. Never throws. */
  private async bootstrap(): Promise<void> {
    const targets = await this.targets();
    const { libp2p, log } = this.init;
    const signal = this.stopController.signal;
    if (targets.length === 0 || signal.aborted) {
      return;
    }
    const self = libp2p.peerId.toString();
    const own = this.ownEndpoints();
    const connected = new Set(libp2p.getConnections().map((c) => c.remotePeer.toString()));
    const dials = targets.filter(({ addr }) => {
      const id = peerIdOf(addr);
      if (id !== undefined) {
        return id !== self && !connected.has(id);
      }
      const ep = ipAndPort(addr);
      return ep?.port === undefined || !own.has(`${ep.ip}|${ep.port}`);
    });
    log.debug({ targets: dials.map((t) => t.addr.toString()) }, 'bootstrapping');
    // random order: nodes starting together do not all dial the first name of the same list first
    for (let i = dials.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [dials[i], dials[j]] = [dials[j] as BootstrapTarget, dials[i] as BootstrapTarget];
    }
    let next = 0;
    const worker = async () => {
      while (next < dials.length && !signal.aborted) {
        const target = dials[next++] as BootstrapTarget;
        if (this.connected(target)) {
          continue; // it dialled us meanwhile
        }
        await this.dialTarget(target);
      }
    };
    await Promise.all(Array.from({ length: Math.min(BOOTSTRAP_DIAL_CONCURRENCY, dials.length) }, worker));
  }

  /** Whether the target is a peer we are connected to (by its id, or else by its listen address). */
  private connected({ addr }: BootstrapTarget): boolean {
    const id = peerIdOf(addr);
    if (id !== undefined) {
      return this.init.libp2p.getConnections().some((c) => c.remotePeer.toString() === id);
    }
    const ep = ipAndPort(addr);
    return ep?.port !== undefined && this.init.connectedAt(ep.ip, ep.port);
  }

  /** Dial one bootstrap target. Never throws. */
  private async dialTarget({ addr, source }: BootstrapTarget): Promise<void> {
    const { libp2p, log } = this.init;
    const signal = this.stopController.signal;
    try {
      const conn = await libp2p.dial(addr, {
        signal: AbortSignal.any([AbortSignal.timeout(this.init.dialTimeoutMs), signal]),
      });
      log.debug({ peer: conn.remotePeer.toString(), addr: addr.toString() }, 'bootstrap peer connected');
    } catch (err) {
      if (!signal.aborted) {
        log.debug({ source, addr: addr.toString(), err: errorText(err) }, 'bootstrap dial failed');
      }
    }
  }

  /** `ip|port` pairs that reach this node (listen and announced addresses, all interfaces if unspecified). */
  private ownEndpoints(): Set<string> {
    const out = new Set<string>();
    const ports = new Set<number>();
    for (const addr of this.init.libp2p.getMultiaddrs()) {
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
}
