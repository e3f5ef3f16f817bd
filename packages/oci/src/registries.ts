/**
 * Registry hosts and endpoints: Docker Hub's aliases, the base URL a registry host is reached at, the
 * `endpoints` map built from configured registry URLs, and host:port formatting with IPv6 brackets.
 */

/** Docker Hub's canonical name (as containerd and references use it). */
export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's registry API lives. */
export const DOCKER_HUB_ENDPOINT = 'https://registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set([DOCKER_HUB, 'index.docker.io', 'registry-1.docker.io']);
const WILDCARDS = new Set(['_default', '*']);

/**
 * Normalises a registry host: lower case, and Docker Hub's aliases ('index.docker.io',
 * 'registry-1.docker.io') become 'docker.io'. Does not validate (see `isValidRegistry`).
 */
export function normalizeRegistry(host: string): string {
  const h = host.trim().toLowerCase();
  return DOCKER_HUB_ALIASES.has(h) ? DOCKER_HUB : h;
}

/** True for `_default` and `*`, which mean "every registry". */
export function isWildcardRegistry(s: string): boolean {
  return WILDCARDS.has(s.trim());
}

/** The base URL of a registry host: `https://<host>` (or `scheme`), Docker Hub at registry-1.docker.io. */
export function registryEndpoint(host: string, scheme: 'http' | 'https' = 'https'): string {
  return normalizeRegistry(host) === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : `${scheme}://${host}`;
}

/**
 * The `endpoints` map (normalised host -> base URL) of registry URLs or bare hosts as configured
 * (`http://10.0.0.9:5000` -> `{ '10.0.0.9:5000': 'http://10.0.0.9:5000' }`; a bare host means https).
 * Docker Hub always goes to {@link DOCKER_HUB_ENDPOINT} and is left out; wildcards and unparsable items
 * are skipped (they are validated where the configuration is read).
 */
export function endpointsOf(registries: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of registries) {
    if (typeof item !== 'string' || isWildcardRegistry(item)) continue;
    const raw = item.trim();
    let url: URL;
    try {
      url = new URL(/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(raw) ? raw : `https://${raw}`);
    } catch {
      continue;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') continue;
    const host = normalizeRegistry(url.host);
    const base = `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
    if (host !== DOCKER_HUB) out[host] = base;
  }
  return out;
}

/** `host:port`, with an IPv6 host in brackets (`[fd00::5]:5000`). */
export function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The first value of a header as node and undici hand them over (a string, a list, or absent). */
export function firstHeader(v: string | readonly string[] | undefined): string | undefined {
  return typeof v === 'string' || v === undefined ? v : v[0];
}
