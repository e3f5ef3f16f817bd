import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { type Cleanup, type Daemon, spawnDaemon } from './daemon.ts';
import { waitFor } from './net.ts';

export interface RegistryOptions {
  /** Loopback address to listen on (from an AddressBlock). */
  host: string;
  /** TCP port. Default 5000. */
  port?: number;
  /** Storage and log directory. Default: a fresh temp dir, removed on dispose. */
  dir?: string;
  /** Registers `dispose()` with `t.after` so the daemon is stopped even when the test fails. */
  t?: Cleanup;
  /** Binary. Default `/usr/bin/docker-registry`. */
  binary?: string;
}

export interface RegistryHandle {
  /** `http://host:port` */
  readonly url: string;
  /** `host:port` as used in image references. */
  readonly host: string;
  readonly dir: string;
  readonly logFile: string;
  /** Stops the daemon (storage kept). */
  stop(): Promise<void>;
  /** Starts it again with the same storage; resolves when `GET /v2/` answers. */
  start(): Promise<void>;
  running(): boolean;
  logs(): string;
  /** Stops and removes the temp dir (if the rig created it). */
  dispose(): Promise<void>;
}

/** Starts Debian's docker-registry (distribution 2.8) with filesystem storage; resolves when `/v2/` answers. */
export async function startRegistry(opts: RegistryOptions): Promise<RegistryHandle> {
  const port = opts.port ?? 5000;
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'ferry-rig-registry-'));
  const storage = join(dir, 'storage');
  mkdirSync(storage, { recursive: true });
  const configFile = join(dir, 'config.yml');
  const logFile = join(dir, 'registry.log');
  writeFileSync(configFile, registryConfig(storage, `${opts.host}:${port}`));
  const url = `http://${opts.host}:${port}`;
  let daemon: Daemon | undefined;

  const handle: RegistryHandle = {
    url,
    host: `${opts.host}:${port}`,
    dir,
    logFile,
    async start() {
      if (daemon?.running()) return;
      const d = spawnDaemon(opts.binary ?? '/usr/bin/docker-registry', ['serve', configFile], logFile);
      daemon = d;
      try {
        await waitFor(
          async () => {
            if (!d.running()) throw new Error(`docker-registry exited:\n${d.logs()}`);
            const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) });
            await res.arrayBuffer();
            return res.status === 200;
          },
          { timeoutMs: 15_000, what: `docker-registry on ${url}` },
        );
      } catch (err) {
        await d.stop(2000);
        throw new Error(`${(err as Error).message}\n--- ${logFile}\n${d.logs()}`);
      }
    },
    async stop() {
      await daemon?.stop(5000);
    },
    running: () => daemon?.running() ?? false,
    logs: () => daemon?.logs() ?? '',
    async dispose() {
      await handle.stop();
      if (ownDir && !process.env.FERRY_RIG_KEEP) rmSync(dir, { recursive: true, force: true });
    },
  };
  opts.t?.after(() => handle.dispose());
  await handle.start();
  return handle;
}

/** Token authentication settings of a docker-registry config (`auth.token`). */
export interface RegistryTokenAuth {
  realm: string;
  service: string;
  issuer: string;
  rootcertbundle: string;
}

/**
 * docker-registry's config.yml: filesystem storage with deletes on, listening on `addr`; no debug listener,
 * notifications, redis, upload purging or access log. With `auth`, Bearer tokens from that issuer.
 */
export function registryConfig(storage: string, addr: string, auth?: RegistryTokenAuth): string {
  return stringify({
    version: 0.1,
    log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: storage },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr },
    ...(auth === undefined ? {} : { auth: { token: auth } }),
  });
}
