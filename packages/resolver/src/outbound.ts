/**
 * Where the upstream client may connect. No client request may make the agent connect to a host that
 * is not a registry it mirrors:
 * - With listed registries (`--mirrored-registries`), only those (and the hosts they name as token realm
 *   or redirect, under the rules below).
 * - With none listed ("all"), only public registry host names: no IP literals, no single-label names
 *   (`localhost`, search-domain names), and no name whose addresses fall in loopback, link-local, private,
 *   shared, multicast or reserved ranges (checked at connect time, so DNS rebinding does not help).
 * - A Bearer token realm must be HTTPS and pass the same address checks, unless its host name is the host
 *   of a listed registry (a registry's own token service on a private address, e.g. a test rig or an
 *   in-cluster registry, works when that registry is listed).
 * - A redirect target (blob storage) passes the same address checks.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { normalizeRegistry } from '@ferry/oci';

/** A `dns.lookup`-shaped resolver (injectable for tests). */
export type LookupAll = (hostname: string) => Promise<LookupAddress[]>;

/** Options of createOutboundPolicy. */
export interface OutboundPolicyOptions {
  /** Mirrored registries (hosts or URLs); empty: all public registries. */
  mirroredRegistries?: readonly string[];
  /** The client's endpoints (registry host -> base URL): listed registries, whatever the mode. */
  endpoints?: Readonly<Record<string, string>>;
  /** DNS (tests). Default dns.lookup with all addresses. */
  lookup?: LookupAll;
}

/** The client's outbound rules; each check answers the reason for a refusal, or undefined. */
export interface OutboundPolicy {
  /** May the client ask this registry (from a client request, e.g. `?ns=`)? */
  checkRegistry(registry: string): string | undefined;
  /** May the client fetch a token from this realm? */
  checkRealm(realm: URL): string | undefined;
  /** May the client connect to this URL (any request, redirects included)? */
  checkUrl(url: URL): string | undefined;
  /** A `lookup` for net/tls connect options that refuses non-public addresses of unlisted hosts. */
  connectLookup: LookupFunction;
}

const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 3],
] as const)
  blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 127],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const)
  blocked.addSubnet(net, prefix, 'ipv6');

/** True when an IP address is not publicly routable (loopback, private, link-local, reserved, …). */
export function isNonPublicAddress(address: string): boolean {
  const v = isIP(address);
  if (v === 4) return blocked.check(address, 'ipv4');
  if (v !== 6) return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, 'ipv4');
  return blocked.check(address, 'ipv6');
}

const hostnameOf = (host: string): string => {
  const h = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '');
  return h.toLowerCase();
};

const defaultLookup: LookupAll = (hostname) =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, { all: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))),
  );

/** Builds the outbound rules of an upstream client. */
export function createOutboundPolicy(opts: OutboundPolicyOptions = {}): OutboundPolicy {
  const registries = new Set<string>();
  const listedHosts = new Set<string>();
  for (const r of opts.mirroredRegistries ?? []) {
    const host = r.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
    if (host === '' || host === '*' || host === '_default') continue;
    const reg = normalizeRegistry(host);
    registries.add(reg);
    listedHosts.add(hostnameOf(reg));
  }
  const all = registries.size === 0;
  for (const [reg, url] of Object.entries(opts.endpoints ?? {})) {
    registries.add(normalizeRegistry(reg));
    listedHosts.add(hostnameOf(normalizeRegistry(reg)));
    if (URL.canParse(url)) listedHosts.add(hostnameOf(new URL(url).host));
  }
  const lookupAll = opts.lookup ?? defaultLookup;

  const checkUrl = (url: URL): string | undefined => {
    const host = hostnameOf(url.host);
    if (listedHosts.has(host)) return undefined;
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'not an http(s) URL';
    if (isIP(host) !== 0 && isNonPublicAddress(host)) return 'not a public address';
    return undefined;
  };

  return {
    checkRegistry(registry) {
      const reg = normalizeRegistry(registry);
      if (registries.has(reg)) return undefined;
      if (!all) return 'not a registry this node mirrors';
      const host = hostnameOf(reg);
      if (isIP(host) !== 0) return 'not a registry this node mirrors (an IP address)';
      if (!host.includes('.') || host.endsWith('.localhost'))
        return 'not a registry this node mirrors (not a public host name)';
      return undefined;
    },
    checkRealm(realm) {
      if (listedHosts.has(hostnameOf(realm.host))) return undefined;
      if (realm.protocol !== 'https:') return 'token realm is not HTTPS';
      return checkUrl(realm);
    },
    checkUrl,
    connectLookup(hostname, options, callback) {
      const host = hostnameOf(hostname);
      lookupAll(hostname).then(
        (addresses) => {
          const f = options.family;
          const family = f === 4 || f === 'IPv4' ? 4 : f === 6 || f === 'IPv6' ? 6 : undefined;
          const usable = family ? addresses.filter((a) => a.family === family) : addresses;
          if (!listedHosts.has(host) && usable.some((a) => isNonPublicAddress(a.address))) {
            const err = Object.assign(new Error(`${hostname} resolves to a non-public address`), {
              code: 'ERR_FERRY_NOT_PUBLIC',
            });
            callback(err, '', 0);
            return;
          }
          if (usable.length === 0) {
            callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '', 0);
            return;
          }
          if (options.all) (callback as (e: null, a: LookupAddress[]) => void)(null, usable);
          else callback(null, usable[0]!.address, usable[0]!.family);
        },
        (err: NodeJS.ErrnoException) => callback(err, '', 0),
      );
    },
  };
}
