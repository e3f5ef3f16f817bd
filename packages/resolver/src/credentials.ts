import { readFile } from 'node:fs/promises';
import { normalizeRegistry } from '@ferry/oci';
import type { DockerAuthEntry, DockerConfig } from './types.ts';

/** Credentials for one registry, decoded from a Docker config entry. */
export type Credential =
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'identity'; refreshToken: string; username?: string }
  | { kind: 'registry'; token: string };

/**
 * Normalises a Docker config `auths` key to a registry host as used in references:
 * `https://index.docker.io/v1/` → `docker.io`, `https://ghcr.io/v2/` → `ghcr.io`, `Host:5000` → `host:5000`.
 */
export function normalizeCredentialHost(key: string): string {
  let k = key.trim();
  const scheme = k.indexOf('://');
  if (scheme !== -1) k = k.slice(scheme + 3);
  const slash = k.indexOf('/');
  if (slash !== -1) k = k.slice(0, slash);
  return normalizeRegistry(k);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function decodeEntry(key: string, entry: DockerAuthEntry): Credential | undefined {
  if (entry.registrytoken) return { kind: 'registry', token: entry.registrytoken };
  let username = entry.username;
  let password = entry.password;
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw new Error(`auths["${key}"].auth is not base64 of "username:password"`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  if (entry.identitytoken) {
    return username === undefined
      ? { kind: 'identity', refreshToken: entry.identitytoken }
      : { kind: 'identity', refreshToken: entry.identitytoken, username };
  }
  if (username !== undefined && password !== undefined) return { kind: 'basic', username, password };
  if (username !== undefined || password !== undefined) {
    throw new Error(
      `auths["${key}"] has ${username === undefined ? 'a password without a username' : 'a username without a password'}`,
    );
  }
  return undefined; // an empty entry (e.g. credsStore placeholders): no credentials
}

/**
 * Checks the shape of a Docker config and decodes its credentials, keyed by normalised registry host.
 * Throws an Error naming the offending key and problem.
 */
export function decodeDockerConfig(config: unknown): Map<string, Credential> {
  const out = new Map<string, Credential>();
  if (!isRecord(config)) throw new Error('expected a JSON object');
  if (config.auths === undefined) return out;
  if (!isRecord(config.auths)) throw new Error('"auths" must be an object');
  for (const [key, raw] of Object.entries(config.auths)) {
    if (!isRecord(raw)) throw new Error(`auths["${key}"] must be an object`);
    for (const field of ['auth', 'username', 'password', 'identitytoken', 'registrytoken'] as const) {
      if (raw[field] !== undefined && typeof raw[field] !== 'string') {
        throw new Error(`auths["${key}"].${field} must be a string`);
      }
    }
    const host = normalizeCredentialHost(key);
    if (host === '') throw new Error(`auths key "${key}" names no registry host`);
    const cred = decodeEntry(key, raw as DockerAuthEntry);
    if (cred) out.set(host, cred);
  }
  return out;
}

/**
 * Reads a Docker `config.json` (or a `.dockerconfigjson` Secret value mounted as a file) and checks it.
 * Errors name the file and the problem.
 */
export async function loadDockerConfig(path: string): Promise<DockerConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`docker config ${path}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`docker config ${path}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  try {
    decodeDockerConfig(json);
  } catch (err) {
    throw new Error(`docker config ${path}: ${(err as Error).message}`, { cause: err });
  }
  return json as DockerConfig;
}
