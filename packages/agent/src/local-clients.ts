/**
 * Which clients of the registry count as the node's own containerd (served without peer
 * authentication; everyone else must sign as a peer or gets 403): `--local-clients`, a list of
 * addresses and CIDRs, or by default loopback, the advertised host and the registry's listen host.
 * Matching uses node:net's BlockList; IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`) match as IPv4.
 */
import { BlockList, isIP } from 'node:net';
import { isLoopback } from '@ferry/registry';
import { localClientItem } from './config-values.ts';

function unmapped(ip: string): string {
  return ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
}

/** The default local clients: loopback and these hosts (the advertised host, the listen host). */
export function defaultLocalClients(hosts: readonly (string | undefined)[]): (ip: string) => boolean {
  const own = new Set(hosts.filter((h): h is string => typeof h === 'string' && h !== ''));
  return (ip) => isLoopback(ip) || own.has(unmapped(ip));
}

/**
 * The local-client test for `--local-clients`: exactly the listed addresses and CIDRs; with an empty
 * list the default (loopback and `hosts`).
 */
export function localClientMatcher(
  list: readonly string[],
  hosts: readonly (string | undefined)[],
): (ip: string) => boolean {
  if (list.length === 0) return defaultLocalClients(hosts);
  const allowed = new BlockList();
  for (const item of list) {
    const [address, prefix] = localClientItem(item).split('/') as [string, string | undefined];
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (prefix === undefined) allowed.addAddress(address, type);
    else allowed.addSubnet(address, Number(prefix), type);
  }
  return (ip) => {
    const v = unmapped(ip);
    const family = isIP(v);
    return family !== 0 && allowed.check(v, family === 6 ? 'ipv6' : 'ipv4');
  };
}
