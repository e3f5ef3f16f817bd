/**
 * `ferry configure`: points containerd at Ferry by writing hosts.toml files (containerd's registry
 * hosts directory, `config_path`). One `<hostsDir>/<host>/hosts.toml` per mirrored registry, or
 * `_default/hosts.toml` for all registries; Ferry's mirrors come first, the real upstream stays `server`.
 *
 * Safety: the first run moves whatever was in the directory to `<hostsDir>/_backup` (once; later runs
 * never touch the backup), every run derives the whole directory from the backup and the options (so
 * runs are idempotent), files are written atomically (temp file + rename), and `cleanup` puts the
 * backup back.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, cp, mkdir, open, readdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import { join } from 'node:path';
import { isWildcardRegistry, normalizeRegistry, registryEndpoint } from '@ferry/oci';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { parseRegistryUrl, RegistryUrlError } from './registry-url.ts';

/** Options of configureHosts. */
export interface ConfigureOptions {
  /** containerd's hosts directory (CRI `config_path`), e.g. /etc/containerd/certs.d. Created if missing. */
  hostsDir: string;
  /** Mirror URLs tried in order before the upstream, e.g. ['http://10.0.0.5:30020']. At least one. */
  mirrorTargets: readonly string[];
  /** Registries to mirror (URLs like https://docker.io, or bare hosts); empty, `_default` or `*`: all. */
  mirroredRegistries?: readonly string[];
  /** Give the mirrors the `resolve` capability (tag -> digest). Default true. */
  resolveTags?: boolean;
  /** Keep the original hosts.toml's host entries after Ferry's, and copy its other files (CA certs) back. */
  prependExisting?: boolean;
  /** `dial_timeout` of each mirror host (containerd 2.x; ignored by 1.6). Default '200ms'. */
  dialTimeout?: string;
}

/** What configureHosts did. */
export interface ConfigureResult {
  /** True when this run created the backup (first run). */
  backedUp: boolean;
  /** hosts.toml files written or already up to date, relative to hostsDir (e.g. 'docker.io/hosts.toml'). */
  files: string[];
  /** Files whose content changed in this run (relative). Empty on an idempotent re-run. */
  changed: string[];
}

/** A bad option of configure/cleanup (message is user-facing). */
export class ConfigureError extends Error {
  override name = 'ConfigureError';
}

/** The backup directory's name inside hostsDir. */
export const BACKUP_DIR = '_backup';
const BACKUP_PARTIAL = '_backup.partial';
const RESTORING = '_backup.restoring';
const RESERVED = new Set([BACKUP_DIR, BACKUP_PARTIAL, RESTORING]);

const HEADER =
  '# Written by `ferry configure`: Ferry mirrors first, then the upstream (server).\n' +
  '# The original configuration is kept in ../_backup; `ferry configure --cleanup` restores it.\n';

/** One hosts.toml to render. */
export interface HostsFileSpec {
  /** The upstream (`server = …`); undefined writes no server line (for `_default`). */
  server?: string;
  /** Mirror URLs, in order. */
  mirrors: readonly string[];
  /** Capabilities given to the mirrors. */
  capabilities: readonly string[];
  /** dial_timeout for the mirrors; undefined: none. */
  dialTimeout?: string;
  /** The original file's parsed content, whose host entries and other top-level keys are kept. */
  existing?: Record<string, unknown>;
}

/** Renders one hosts.toml (pure). */
export function renderHostsToml(spec: HostsFileSpec): string {
  const doc: Record<string, unknown> = {};
  const existing = spec.existing ?? {};
  const server = spec.server ?? (typeof existing.server === 'string' ? existing.server : undefined);
  if (server !== undefined) doc.server = server;
  for (const [k, v] of Object.entries(existing)) {
    if (k !== 'server' && k !== 'host') doc[k] = v;
  }
  const hosts: Record<string, unknown> = {};
  for (const m of spec.mirrors) {
    const entry: Record<string, unknown> = { capabilities: [...spec.capabilities] };
    if (spec.dialTimeout !== undefined) entry.dial_timeout = spec.dialTimeout;
    hosts[m] = entry;
  }
  const oldHosts = existing.host;
  if (oldHosts && typeof oldHosts === 'object' && !Array.isArray(oldHosts)) {
    for (const [url, entry] of Object.entries(oldHosts as Record<string, unknown>)) {
      if (!(url in hosts)) hosts[url] = entry;
    }
  }
  doc.host = hosts;
  return `${HEADER}\n${stringifyToml(doc)}\n`;
}

/** The upstream for a registry host: docker.io's registry lives at registry-1.docker.io (@ferry/oci). */
export const upstreamFor = registryEndpoint;

interface Target {
  dir: string;
  server: string | undefined;
}

/**
 * `http://fd00::5:5000` → `http://[fd00::5]:5000`. Kubernetes substitutes `$(NODE_IP)` without brackets,
 * so on an IPv6 node the chart's `http://$(NODE_IP):5000` arrives bare; the last `:<digits>` is the port.
 */
export function bracketBareIPv6(target: string): string {
  const m = /^(https?:\/\/)([0-9a-fA-F:.]+):(\d+)$/.exec(target.trim());
  if (m === null || !isIPv6(m[2] as string)) return target;
  return `${m[1]}[${m[2]}]:${m[3]}`;
}

function planTargets(opts: ConfigureOptions): { targets: Target[]; all: boolean; mirrors: string[] } {
  if (opts.mirrorTargets.length === 0) throw new ConfigureError('at least one mirror target is required');
  const mirrors: string[] = [];
  for (const t of opts.mirrorTargets) {
    try {
      const u = parseRegistryUrl(bracketBareIPv6(t), 'mirror target', true);
      if (!mirrors.includes(u.origin)) mirrors.push(u.origin);
    } catch (err) {
      if (err instanceof RegistryUrlError) throw new ConfigureError(err.message);
      throw err;
    }
  }
  const regs = opts.mirroredRegistries ?? [];
  if (regs.length === 0 || regs.some(isWildcardRegistry)) {
    return { targets: [{ dir: '_default', server: undefined }], all: true, mirrors };
  }
  const targets: Target[] = [];
  for (const r of regs) {
    let u: ReturnType<typeof parseRegistryUrl>;
    try {
      u = parseRegistryUrl(r, 'mirrored registry');
    } catch (err) {
      if (err instanceof RegistryUrlError) throw new ConfigureError(err.message);
      throw err;
    }
    const dir = normalizeRegistry(u.host);
    if (!targets.some((t) => t.dir === dir)) targets.push({ dir, server: upstreamFor(dir, u.scheme) });
  }
  return { targets, all: false, mirrors };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

async function move(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await cp(from, to, { recursive: true, preserveTimestamps: true });
    await rm(from, { recursive: true, force: true });
  }
}

/** Writes a file atomically: a temp file in the same directory, fsync, rename. */
export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Moves the original content of hostsDir to _backup, once. Returns true when it did so now. */
async function backupOnce(hostsDir: string): Promise<boolean> {
  const backup = join(hostsDir, BACKUP_DIR);
  if (await exists(backup)) return false;
  const partial = join(hostsDir, BACKUP_PARTIAL);
  await mkdir(partial, { recursive: true });
  for (const name of await readdir(hostsDir)) {
    if (RESERVED.has(name)) continue;
    await move(join(hostsDir, name), join(partial, name));
  }
  await rename(partial, backup);
  return true;
}

async function parseExisting(path: string): Promise<Record<string, unknown> | undefined> {
  const text = await readIfExists(path);
  if (text === undefined) return undefined;
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigureError(`cannot parse the original ${path}: ${(err as Error).message.split('\n')[0]}`);
  }
}

/**
 * Writes the hosts.toml files (see the module comment). Idempotent: a second run with the same options
 * changes nothing. Throws ConfigureError for bad options.
 */
export async function configureHosts(opts: ConfigureOptions): Promise<ConfigureResult> {
  const { targets, all, mirrors } = planTargets(opts);
  const capabilities = opts.resolveTags === false ? ['pull'] : ['pull', 'resolve'];
  const dialTimeout = opts.dialTimeout ?? '200ms';
  const hostsDir = opts.hostsDir;
  await mkdir(hostsDir, { recursive: true });
  if (await exists(join(hostsDir, RESTORING))) {
    throw new ConfigureError(
      `${join(hostsDir, RESTORING)} exists: an earlier cleanup was interrupted; run --cleanup again`,
    );
  }
  const backedUp = await backupOnce(hostsDir);
  const backup = join(hostsDir, BACKUP_DIR);
  const originals = (await readdir(backup, { withFileTypes: true })).filter((e) => !RESERVED.has(e.name));

  // The desired directory: entries to copy from the backup unchanged, and hosts.toml files to write.
  const copyBack = new Map<string, string>(); // relative dest -> backup source
  const files = new Map<string, string>(); // relative path -> content
  const targetDirs = new Set(targets.map((t) => t.dir));

  const allTargets = [...targets];
  if (all && opts.prependExisting) {
    // Every original registry directory with a hosts.toml would shadow _default: mirror it too.
    for (const e of originals) {
      if (e.isDirectory() && !targetDirs.has(e.name) && (await exists(join(backup, e.name, 'hosts.toml')))) {
        allTargets.push({ dir: e.name, server: undefined });
        targetDirs.add(e.name);
      }
    }
  }

  for (const t of allTargets) {
    let existing: Record<string, unknown> | undefined;
    if (opts.prependExisting && (await exists(join(backup, t.dir)))) {
      existing = await parseExisting(join(backup, t.dir, 'hosts.toml'));
      for (const e of await readdir(join(backup, t.dir))) {
        if (e !== 'hosts.toml') copyBack.set(join(t.dir, e), join(backup, t.dir, e));
      }
    }
    const server =
      existing && typeof existing.server === 'string'
        ? existing.server
        : (t.server ?? (t.dir === '_default' ? undefined : upstreamFor(t.dir)));
    const spec: HostsFileSpec = { mirrors, capabilities, dialTimeout };
    if (server !== undefined) spec.server = server;
    if (existing !== undefined) spec.existing = existing;
    files.set(join(t.dir, 'hosts.toml'), renderHostsToml(spec));
  }
  if (!all) {
    // Registries Ferry does not mirror keep their original configuration.
    for (const e of originals) {
      if (!targetDirs.has(e.name)) copyBack.set(e.name, join(backup, e.name));
    }
  }

  // Remove entries that are not part of the desired state.
  const keepTop = new Set<string>([...RESERVED]);
  for (const p of [...files.keys(), ...copyBack.keys()]) keepTop.add(p.split(/[\\/]/)[0]!);
  for (const name of await readdir(hostsDir)) {
    if (!keepTop.has(name)) await rm(join(hostsDir, name), { recursive: true, force: true });
  }
  for (const t of allTargets) {
    const dir = join(hostsDir, t.dir);
    if (!(await exists(dir))) continue;
    for (const name of await readdir(dir)) {
      const rel = join(t.dir, name);
      if (!files.has(rel) && !copyBack.has(rel)) await rm(join(dir, name), { recursive: true, force: true });
    }
  }

  for (const [rel, src] of copyBack) {
    await cp(src, join(hostsDir, rel), { recursive: true, force: true, preserveTimestamps: true });
  }
  const changed: string[] = [];
  for (const [rel, content] of files) {
    const path = join(hostsDir, rel);
    await mkdir(join(path, '..'), { recursive: true });
    if ((await readIfExists(path)) === content) continue;
    await writeFileAtomic(path, content);
    changed.push(rel);
  }
  return { backedUp, files: [...files.keys()].sort(), changed: changed.sort() };
}

/** What cleanupHosts did. */
export interface CleanupResult {
  /** True when a backup was found and put back. */
  restored: boolean;
}

/**
 * Removes Ferry's files and puts the backup back (and removes `_backup`). Without a backup it does
 * nothing (there is nothing Ferry could know to restore). Safe to re-run after an interruption.
 */
export async function cleanupHosts(hostsDir: string): Promise<CleanupResult> {
  const backup = join(hostsDir, BACKUP_DIR);
  const restoring = join(hostsDir, RESTORING);
  if (!(await exists(restoring))) {
    if (!(await exists(backup))) return { restored: false };
    for (const name of await readdir(hostsDir)) {
      if (name === BACKUP_DIR) continue;
      if (name === BACKUP_PARTIAL) continue;
      await rm(join(hostsDir, name), { recursive: true, force: true });
    }
    await rename(backup, restoring);
  }
  for (const name of await readdir(restoring)) {
    await move(join(restoring, name), join(hostsDir, name));
  }
  await rmdir(restoring);
  return { restored: true };
}
