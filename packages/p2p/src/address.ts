import { isIP } from 'node:net';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';

/** One bootstrap target: a multiaddr to dial (with `/p2p/<id>` when the id is known). */
export interface BootstrapTarget {
  addr: Multiaddr;
  /** The entry as configured, for logs and errors. */
  source: string;
}

/** A `host:port` pair split from `name:port`, `ip:port` or `[v6]:port`. */
export interface HostPort {
  host: string;
  port: number;
}

function parsePort(text: string, entry: string): number {
  if (!/^\d{1,5}$/.test(text)) {
    throw new Error(`invalid port in "${entry}"`);
  }
  const port = Number(text);
  if (port < 1 || port > 65535) {
    throw new Error(`port out of range in "${entry}"`);
  }
  return port;
}

/** Split `host:port` or `[v6]:port`. Throws a clear error when the shape is wrong. */
export function splitHostPort(entry: string): HostPort {
  const bracketed = /^\[([^\]]+)\]:(.+)$/.exec(entry);
  if (bracketed !== null) {
    const host = bracketed[1] ?? '';
    if (isIP(host) !== 6) {
      throw new Error(`"${entry}": brackets must hold an IPv6 address`);
    }
    return { host, port: parsePort(bracketed[2] ?? '', entry) };
  }
  const colon = entry.lastIndexOf(':');
  if (colon <= 0 || entry.indexOf(':') !== colon) {
    throw new Error(`"${entry}" is not host:port (write IPv6 as [addr]:port)`);
  }
  return { host: entry.slice(0, colon), port: parsePort(entry.slice(colon + 1), entry) };
}

/** The TCP multiaddr for an IP address and port. */
export function ipMultiaddr(ip: string, port: number): Multiaddr {
  const family = isIP(ip);
  if (family === 0) {
    throw new Error(`"${ip}" is not an IP address`);
  }
  return multiaddr(`/ip${family}/${ip}/tcp/${port}`);
}

/**
 * Parse a static bootstrap entry: `ip:port`, `[v6]:port`, or a multiaddr (optionally ending in
 * `/p2p/<peer id>`).
 */
export function parseBootstrapPeer(entry: string): BootstrapTarget {
  const text = entry.trim();
  if (text.startsWith('/')) {
    try {
      return { addr: multiaddr(text), source: entry };
    } catch (err) {
      throw new Error(`"${entry}" is not a valid multiaddr: ${(err as Error).message}`);
    }
  }
  const { host, port } = splitHostPort(text);
  if (isIP(host) === 0) {
    throw new Error(`"${entry}": host must be an IP address (use bootstrapDns for names)`);
  }
  return { addr: ipMultiaddr(host, port), source: entry };
}

/** Parse a DNS bootstrap entry `name:port` (the name may also be a literal IP). */
export function parseBootstrapDns(entry: string): HostPort {
  const hp = splitHostPort(entry.trim());
  if (hp.host.length === 0) {
    throw new Error(`"${entry}": empty host name`);
  }
  return hp;
}

/** IP and TCP port of a multiaddr, when it has them. */
export function ipAndPort(addr: Multiaddr): { ip: string; family: 4 | 6; port?: number } | undefined {
  let ip: string | undefined;
  let family: 4 | 6 = 4;
  let port: number | undefined;
  for (const component of addr.getComponents()) {
    if ((component.name === 'ip4' || component.name === 'ip6') && ip === undefined) {
      ip = component.value;
      family = component.name === 'ip4' ? 4 : 6;
    } else if (component.name === 'tcp' && port === undefined && component.value !== undefined) {
      port = Number(component.value);
    }
  }
  if (ip === undefined) {
    return undefined;
  }
  return port === undefined ? { ip, family } : { ip, family, port };
}

/** The peer id in a multiaddr's `/p2p/<id>` component, if any. */
export function peerIdOf(addr: Multiaddr): string | undefined {
  for (const component of addr.getComponents()) {
    if (component.name === 'p2p') {
      return component.value;
    }
  }
  return undefined;
}

function isLoopback(ip: string, family: 4 | 6): boolean {
  return family === 4 ? ip.startsWith('127.') : ip === '::1';
}

function isUnspecified(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::';
}

function isLinkLocal(ip: string, family: 4 | 6): boolean {
  return family === 4 ? ip.startsWith('169.254.') : /^fe[89ab]/i.test(ip);
}

/**
 * Choose the host to reach a peer's registry at, from its multiaddrs: a routable IPv4 first,
 * then a routable IPv6, then link-local, and loopback only when nothing else is there.
 */
export function pickHost(addrs: Iterable<Multiaddr>): string | undefined {
  let best: { ip: string; rank: number } | undefined;
  for (const addr of addrs) {
    const parsed = ipAndPort(addr);
    if (parsed === undefined || isUnspecified(parsed.ip)) {
      continue;
    }
    const { ip, family } = parsed;
    let rank: number;
    if (isLoopback(ip, family)) {
      rank = 3;
    } else if (isLinkLocal(ip, family)) {
      rank = 2;
    } else {
      rank = family === 4 ? 0 : 1;
    }
    if (best === undefined || rank < best.rank) {
      best = { ip, rank };
    }
  }
  return best?.ip;
}

/** The agent version Ferry nodes announce through identify. */
export function formatAgentVersion(version: string, registryPort: number): string {
  return `ferry/${version} registry=${registryPort}`;
}

/** The registry port in a peer's agent version, if it is a Ferry node that announced one. */
export function parseRegistryPort(agentVersion: string | undefined): number | undefined {
  if (agentVersion === undefined) {
    return undefined;
  }
  const match = /^ferry\/\S+ (?:.* )?registry=(\d{1,5})(?: |$)/.exec(agentVersion);
  if (match === null) {
    return undefined;
  }
  const port = Number(match[1]);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/** `addr` ending in `/p2p/<id>` (added when absent), so that the dial checks the peer's identity. */
export function withPeerId(addr: Multiaddr, id: string): Multiaddr {
  return peerIdOf(addr) === undefined ? addr.encapsulate(`/p2p/${id}`) : addr;
}
