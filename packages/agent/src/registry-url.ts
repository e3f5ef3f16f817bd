/**
 * Registry and mirror URLs as they appear in `--mirrored-registries` and `--mirror-targets`.
 *
 * A registry is written as a URL (`https://docker.io`, `http://127.0.0.1:5000`) or, for convenience, as a
 * bare host (`docker.io`, `127.0.0.1:5000`, `[::1]:5000`), which means https. `_default` and `*` stand for
 * "every registry". Paths, queries, fragments and user info are rejected: containerd's hosts.toml takes
 * a plain origin.
 */

/** A parsed registry or mirror URL. */
export interface RegistryUrl {
  /** 'http' or 'https'. */
  scheme: 'http' | 'https';
  /** host[:port] as containerd names the registry (and the hosts.toml directory), e.g. 'docker.io', '[::1]:5000'. */
  host: string;
  /** The origin, e.g. 'https://docker.io', 'http://[::1]:5000'. */
  origin: string;
}

/** Thrown for a malformed registry or mirror URL; the message says what is wrong. */
export class RegistryUrlError extends Error {
  override name = 'RegistryUrlError';
}

export { isWildcardRegistry } from '@ferry/oci';

/**
 * Parses a registry URL or bare host. `what` names the value in errors ("mirrored registry", "mirror target").
 * With `requireScheme`, a bare host is an error (mirror targets must say http or https).
 */
export function parseRegistryUrl(input: string, what = 'registry', requireScheme = false): RegistryUrl {
  const raw = input.trim();
  if (raw === '') throw new RegistryUrlError(`${what}: empty value`);
  const hasScheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(raw);
  if (!hasScheme && requireScheme) {
    throw new RegistryUrlError(
      `${what} "${raw}": expected a URL like http://10.0.0.5:5000 (with http:// or https://)`,
    );
  }
  let url: URL;
  try {
    url = new URL(hasScheme ? raw : `https://${raw}`);
  } catch {
    throw new RegistryUrlError(`${what} "${raw}": not a valid URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RegistryUrlError(
      `${what} "${raw}": scheme must be http or https, got ${url.protocol.slice(0, -1)}`,
    );
  }
  if (url.username !== '' || url.password !== '') {
    throw new RegistryUrlError(
      `${what} "${raw}": user info is not allowed (configure credentials in containerd)`,
    );
  }
  if (url.search !== '' || raw.includes('?')) {
    throw new RegistryUrlError(`${what} "${raw}": a query string is not allowed`);
  }
  if (url.hash !== '' || raw.includes('#')) {
    throw new RegistryUrlError(`${what} "${raw}": a fragment is not allowed`);
  }
  if (url.pathname !== '/' && url.pathname !== '') {
    throw new RegistryUrlError(`${what} "${raw}": a path is not allowed (got ${url.pathname})`);
  }
  if (url.hostname === '') throw new RegistryUrlError(`${what} "${raw}": missing host`);
  const scheme = url.protocol === 'http:' ? 'http' : 'https';
  return { scheme, host: url.host, origin: `${scheme}://${url.host}` };
}
