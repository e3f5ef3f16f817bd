import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type ContainerdClient, createContainerdClient } from '@ferry/containerd';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { type Cleanup, type Daemon, spawnDaemon } from './daemon.ts';
import { waitFor } from './net.ts';

const execFileP = promisify(execFile);

export interface ContainerdRigOptions {
  /** Node name; used for the temp dir name and in messages. */
  name: string;
  /** The node's loopback address: CRI's stream server listens there (port 0). */
  host: string;
  /** Base directory (root, state, socket, logs go below it). Default: a fresh temp dir, removed on dispose. */
  dir?: string;
  /** CRI `registry.config_path` = the hosts.toml root, and the default `--hosts-dir` of `pull`. Default `<dir>/hosts`. */
  hostsDir?: string;
  /** CRI `discard_unpacked_layers`. Default false. */
  discardUnpackedLayers?: boolean;
  /** bolt `content_sharing_policy`. Default `shared`. */
  contentSharingPolicy?: 'shared' | 'isolated';
  /** Snapshotter. Default: `overlayfs` when an overlay mount works here, else `native`. */
  snapshotter?: string;
  /** Registers `dispose()` with `t.after` so the daemon is stopped even when the test fails. */
  t?: Cleanup;
  /** Binary. Default `/usr/bin/containerd`. */
  binary?: string;
}

export interface PullOptions {
  /** `--hosts-dir`. Default: the node's hostsDir. */
  hostsDir?: string;
  /** `--plain-http` (upstream without TLS). Default true: the rig's registries speak plain HTTP. */
  plainHttp?: boolean;
  /** Namespace. Default `k8s.io`. */
  namespace?: string;
  /** Kill ctr after this many ms (a mirror that never answers hangs ctr). Default 120000. */
  timeoutMs?: number;
}

export interface ContainerdHandle {
  readonly name: string;
  readonly host: string;
  readonly dir: string;
  readonly root: string;
  readonly state: string;
  readonly socket: string;
  readonly hostsDir: string;
  /** `<root>/io.containerd.content.v1.content` */
  readonly contentPath: string;
  readonly snapshotter: string;
  readonly logFile: string;
  /** A @ferry/containerd client on this node (namespace k8s.io), closed on dispose. */
  readonly client: ContainerdClient;
  /** Starts the daemon (again); resolves when Version answers. */
  start(): Promise<void>;
  /** SIGTERM, SIGKILL after 10 s. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  running(): boolean;
  logs(): string;
  /** Runs `ctr -a <socket> -n <namespace> ...args`; rejects with stderr on failure. */
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<string>;
  /** `ctr images pull --hosts-dir … [--plain-http] --snapshotter … ref`. */
  pull(ref: string, opts?: PullOptions): Promise<void>;
  /** CRI ImageService/PullImage over gRPC, as a kubelet does (uses config_path); returns image_ref. */
  criPull(ref: string, opts?: { timeoutMs?: number }): Promise<string>;
  /** Stops the daemon, closes the client, removes the temp dir (if the rig created it). */
  dispose(): Promise<void>;
}

let overlayOk: boolean | undefined;
/** Whether an overlay mount works on this machine (tried once per process, as root). */
export function overlaySupported(): boolean {
  if (overlayOk !== undefined) return overlayOk;
  const d = mkdtempSync(join(tmpdir(), 'ferry-rig-ovl-'));
  try {
    for (const s of ['l', 'u', 'w', 'm']) mkdirSync(join(d, s));
    execFileSync(
      'mount',
      ['-t', 'overlay', 'overlay', '-o', `lowerdir=${d}/l,upperdir=${d}/u,workdir=${d}/w`, `${d}/m`],
      { stdio: 'ignore' },
    );
    execFileSync('umount', [`${d}/m`], { stdio: 'ignore' });
    overlayOk = true;
  } catch {
    overlayOk = false;
  }
  rmSync(d, { recursive: true, force: true });
  return overlayOk;
}

const toml = (s: string) => JSON.stringify(s);

let criImages: grpc.ServiceClientConstructor | undefined;
function criImageService(): grpc.ServiceClientConstructor {
  if (!criImages) {
    const file = fileURLToPath(new URL('./proto/cri-images.proto', import.meta.url));
    const pkg = grpc.loadPackageDefinition(
      protoLoader.loadSync(file, { keepCase: true, defaults: true }),
    ) as {
      runtime: { v1: { ImageService: grpc.ServiceClientConstructor } };
    };
    criImages = pkg.runtime.v1.ImageService;
  }
  return criImages;
}

/** Starts a real containerd (own root, state, socket, hosts dir; CRI on); resolves when Version answers. */
export async function startContainerd(opts: ContainerdRigOptions): Promise<ContainerdHandle> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), `ferry-rig-${opts.name}-`));
  const root = join(dir, 'root');
  const state = join(dir, 'state');
  const hostsDir = opts.hostsDir ?? join(dir, 'hosts');
  const socket = join(dir, 'containerd.sock');
  const logFile = join(dir, 'containerd.log');
  const configFile = join(dir, 'config.toml');
  for (const d of [root, state, hostsDir]) mkdirSync(d, { recursive: true });
  const snapshotter = opts.snapshotter ?? (overlaySupported() ? 'overlayfs' : 'native');
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  writeFileSync(
    configFile,
    [
      'version = 2',
      `root = ${toml(root)}`,
      `state = ${toml(state)}`,
      'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]',
      '[grpc]',
      `  address = ${toml(socket)}`,
      '  tcp_address = ""',
      '[ttrpc]',
      `  address = ${toml(`${socket}.ttrpc`)}`,
      '[debug]',
      '  address = ""',
      '  level = "info"',
      '[metrics]',
      '  address = ""',
      `[${cri}]`,
      `  stream_server_address = ${toml(opts.host)}`,
      '  stream_server_port = "0"',
      '  disable_tcp_service = true',
      `[${cri}.containerd]`,
      `  snapshotter = ${toml(snapshotter)}`,
      `  discard_unpacked_layers = ${opts.discardUnpackedLayers ? 'true' : 'false'}`,
      `[${cri}.cni]`,
      `  conf_dir = ${toml(join(dir, 'cni'))}`,
      `[${cri}.registry]`,
      `  config_path = ${toml(hostsDir)}`,
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${toml(join(dir, 'opt'))}`,
      '[plugins."io.containerd.metadata.v1.bolt"]',
      `  content_sharing_policy = ${toml(opts.contentSharingPolicy ?? 'shared')}`,
      '',
    ].join('\n'),
  );
  const contentPath = join(root, 'io.containerd.content.v1.content');
  const client = createContainerdClient({ socket, contentPath, callTimeoutMs: 5000 });
  let daemon: Daemon | undefined;

  const ctr: ContainerdHandle['ctr'] = async (args, o = {}) => {
    try {
      const { stdout } = await execFileP('ctr', ['-a', socket, '-n', o.namespace ?? 'k8s.io', ...args], {
        timeout: o.timeoutMs ?? 120_000,
        maxBuffer: 64 * 1024 * 1024,
      });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`ctr ${args.join(' ')} on ${opts.name} failed: ${e.stderr || e.message}`);
    }
  };

  const handle: ContainerdHandle = {
    name: opts.name,
    host: opts.host,
    dir,
    root,
    state,
    socket,
    hostsDir,
    contentPath,
    snapshotter,
    logFile,
    client,
    async start() {
      if (daemon?.running()) return;
      const d = spawnDaemon(opts.binary ?? '/usr/bin/containerd', ['--config', configFile], logFile);
      daemon = d;
      try {
        await waitFor(
          async () => {
            if (!d.running()) throw new Error(`containerd ${opts.name} exited`);
            return (await client.version()).version !== '';
          },
          { timeoutMs: 30_000, what: `containerd ${opts.name} on ${socket}` },
        );
      } catch (err) {
        await d.stop(2000);
        throw new Error(`${(err as Error).message}\n--- ${logFile}\n${d.logs()}`);
      }
    },
    async stop() {
      await daemon?.stop(10_000);
    },
    async restart() {
      await handle.stop();
      await handle.start();
    },
    running: () => daemon?.running() ?? false,
    logs: () => daemon?.logs() ?? '',
    ctr,
    async pull(ref, o = {}) {
      const args = ['images', 'pull', '--hosts-dir', o.hostsDir ?? hostsDir, '--snapshotter', snapshotter];
      if (o.plainHttp ?? true) args.push('--plain-http');
      args.push(ref);
      await ctr(args, { namespace: o.namespace ?? 'k8s.io', timeoutMs: o.timeoutMs ?? 120_000 });
    },
    criPull(ref, o = {}) {
      const Ctor = criImageService();
      const c = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure());
      return new Promise<string>((resolve, reject) => {
        const call = (c as unknown as Record<string, (...a: unknown[]) => void>).PullImage;
        call?.call(
          c,
          { image: { image: ref } },
          new grpc.Metadata(),
          { deadline: Date.now() + (o.timeoutMs ?? 120_000) },
          (err: grpc.ServiceError | null, res?: { image_ref: string }) => {
            c.close();
            if (err || !res)
              reject(new Error(`CRI PullImage ${ref} on ${opts.name}: ${err?.details ?? err}`));
            else resolve(res.image_ref);
          },
        );
      });
    },
    async dispose() {
      await handle.stop();
      client.close();
      if (ownDir && !process.env.FERRY_RIG_KEEP) rmSync(dir, { recursive: true, force: true });
    },
  };
  opts.t?.after(() => handle.dispose());
  await handle.start();
  return handle;
}
