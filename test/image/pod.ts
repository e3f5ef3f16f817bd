/**
 * Runs a container of the chart's pods the way a kubelet runs it, with real containerd and runc: the
 * container from real Helm's render becomes an OCI runtime spec (the image's entrypoint with the
 * container's args, its env with `$(VAR)` expanded and the downward-API fields filled in, the uid and gid
 * of its securityContext, no capabilities, no-new-privileges, containerd's default seccomp profile, a
 * read-only root, the hostPath volumes bound ro/rw at their mount paths, the memory limit) and is run by
 * `ctr run --config` over a snapshot of the image prepared here.
 *
 * The pod shares the node's network namespace: the chart's hostPorts make the agent reachable at
 * `<node IP>:<port>`, which is what the node's containerd and the other agents dial.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ContainerdHandle } from '../rig/index.ts';
import { waitFor } from '../rig/index.ts';

const execFileP = promisify(execFile);

/** The namespace the pods' images and containers live in (a kubelet's). */
export const POD_NAMESPACE = 'k8s.io';

export interface KubeContainer {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  securityContext?: {
    runAsUser?: number;
    runAsGroup?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
    seccompProfile?: { type: string };
  };
  resources?: { limits?: { memory?: string } };
}

export interface KubePodSpec {
  containers: KubeContainer[];
  initContainers?: KubeContainer[];
  volumes?: {
    name: string;
    hostPath?: { path: string };
    secret?: { secretName: string; items?: { key: string; path: string }[] };
  }[];
  securityContext?: { seccompProfile?: { type: string } };
}

/** What a node provides to a pod: the downward API's fields and where each volume lives on the node. */
export interface PodContext {
  nodeIp: string;
  podIp: string;
  /** Volume name → directory on this machine standing in for the node's hostPath (or a Secret's files). */
  volumes: Record<string, string>;
}

export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
}

export interface ImportedImage {
  ref: string;
  /** The chain id of the image's top layer: the parent of every container's snapshot. */
  chainId: string;
  config: ImageConfig;
}

/** `ctr images import` of an OCI archive into the node's containerd (unpacked), and its config. */
export async function importImage(node: ContainerdHandle, archive: string): Promise<ImportedImage> {
  await node.ctr(['images', 'import', '--snapshotter', node.snapshotter, archive], {
    namespace: POD_NAMESPACE,
    timeoutMs: 300_000,
  });
  const listed = await node.ctr(['images', 'ls'], { namespace: POD_NAMESPACE });
  const row = listed.split('\n').find((l) => / sha256:[0-9a-f]{64} /.test(l) && !l.startsWith('REF'));
  if (!row) throw new Error(`no image imported from ${archive}:\n${listed}`);
  const ref = row.split(/\s+/)[0]!;
  const manifestDigest = /sha256:[0-9a-f]{64}/.exec(row)![0];
  const manifest = JSON.parse(
    await node.ctr(['content', 'get', manifestDigest], { namespace: POD_NAMESPACE }),
  ) as {
    config: { digest: string };
  };
  const config = JSON.parse(
    await node.ctr(['content', 'get', manifest.config.digest], { namespace: POD_NAMESPACE }),
  ) as {
    config: ImageConfig;
    rootfs: { diff_ids: string[] };
  };
  return { ref, chainId: chainIdOf(config.rootfs.diff_ids), config: config.config };
}

/** The OCI chain id: diff id of the first layer, then sha256("<parent chain id> <diff id>"). */
export function chainIdOf(diffIds: string[]): string {
  let chain = diffIds[0]!;
  for (const d of diffIds.slice(1))
    chain = `sha256:${createHash('sha256').update(`${chain} ${d}`).digest('hex')}`;
  return chain;
}

/** Kubernetes memory quantities as bytes ("512Mi", "1Gi", "128974848"). */
export function memoryBytes(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (!m) throw new Error(`unsupported memory quantity ${q}`);
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? unit[m[2] as keyof typeof unit] : 1);
}

/** Kubernetes' `$(VAR)` expansion (`$$` escapes); unknown variables stay as written. */
export function expandVars(s: string, vars: Map<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string | undefined) =>
    name === undefined ? '$' : (vars.get(name) ?? all),
  );
}

/** The container's environment as a kubelet builds it: the image's, then the container's, in order. */
export function containerEnv(c: KubeContainer, image: ImageConfig, ctx: PodContext): Map<string, string> {
  const env = new Map<string, string>();
  for (const kv of image.Env ?? []) {
    const i = kv.indexOf('=');
    env.set(kv.slice(0, i), kv.slice(i + 1));
  }
  const own = new Map<string, string>();
  for (const e of c.env ?? []) {
    let v: string;
    if (e.valueFrom) {
      const field = e.valueFrom.fieldRef?.fieldPath;
      if (field === 'status.hostIP') v = ctx.nodeIp;
      else if (field === 'status.podIP') v = ctx.podIp;
      else throw new Error(`${c.name}: env ${e.name}: unsupported valueFrom ${JSON.stringify(e.valueFrom)}`);
    } else {
      v = expandVars(e.value ?? '', own);
    }
    own.set(e.name, v);
    env.set(e.name, v);
  }
  return env;
}

const defaultSpecs = new WeakMap<ContainerdHandle, Promise<Record<string, unknown>>>();

/** The spec containerd gives `ctr` containers with its default seccomp profile (`--seccomp`). */
function defaultSpec(node: ContainerdHandle, image: ImportedImage): Promise<Record<string, unknown>> {
  let spec = defaultSpecs.get(node);
  if (!spec) {
    spec = probeSpec(node, image);
    defaultSpecs.set(node, spec);
  }
  return spec.then((s) => structuredClone(s));
}

async function probeSpec(node: ContainerdHandle, image: ImportedImage): Promise<Record<string, unknown>> {
  const id = `spec-probe-${process.pid}`;
  await node.ctr(['containers', 'create', '--seccomp', '--snapshotter', node.snapshotter, image.ref, id], {
    namespace: POD_NAMESPACE,
  });
  try {
    const info = JSON.parse(await node.ctr(['containers', 'info', id], { namespace: POD_NAMESPACE })) as {
      Spec: Record<string, unknown>;
    };
    return info.Spec;
  } finally {
    await node.ctr(['containers', 'delete', id], { namespace: POD_NAMESPACE });
  }
}

type Spec = {
  process: Record<string, unknown>;
  root: { path: string; readonly: boolean };
  mounts: { destination: string; type: string; source: string; options: string[] }[];
  hostname?: string;
  linux: {
    namespaces: { type: string; path?: string }[];
    resources?: Record<string, unknown>;
    cgroupsPath?: string;
    seccomp?: unknown;
  };
};

/** One container of a pod on a node, and the id it runs under. */
export interface PodContainer {
  node: ContainerdHandle;
  image: ImportedImage;
  pod: KubePodSpec;
  container: KubeContainer;
  ctx: PodContext;
  id: string;
}

/** The OCI runtime spec for the container (see the file comment), its root at `rootfs`. */
export async function specFor(pc: PodContainer, rootfs: string): Promise<Spec> {
  const { node, image, pod, container: c, ctx, id } = pc;
  const spec = (await defaultSpec(node, image)) as unknown as Spec;
  const sc = c.securityContext ?? {};
  const env = containerEnv(c, image.config, ctx);
  const argv = [
    ...(c.command ?? image.config.Entrypoint ?? []),
    ...(c.args ?? (c.command ? [] : (image.config.Cmd ?? []))),
  ];
  const [imgUid, imgGid] = (image.config.User ?? '0:0').split(':').map(Number);
  if (sc.capabilities?.add?.length) throw new Error(`${c.name}: added capabilities are not translated`);
  if (!sc.capabilities?.drop?.includes('ALL')) throw new Error(`${c.name}: only drop: [ALL] is translated`);
  const seccomp = sc.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type;
  if (seccomp !== 'RuntimeDefault')
    throw new Error(`${c.name}: seccomp profile ${seccomp} is not translated`);
  spec.process = {
    ...spec.process,
    terminal: false,
    args: argv.map((a) => expandVars(a, env)),
    env: [...env].map(([k, v]) => `${k}=${v}`),
    cwd: image.config.WorkingDir || '/',
    user: { uid: sc.runAsUser ?? imgUid ?? 0, gid: sc.runAsGroup ?? imgGid ?? 0 },
    capabilities: { bounding: [], effective: [], permitted: [], inheritable: [], ambient: [] },
    noNewPrivileges: sc.allowPrivilegeEscalation === false,
  };
  spec.root = { path: rootfs, readonly: sc.readOnlyRootFilesystem === true };
  spec.hostname = c.name;
  for (const m of c.volumeMounts ?? []) {
    const vol = pod.volumes?.find((v) => v.name === m.name);
    const source = ctx.volumes[m.name];
    if (!vol || !source) throw new Error(`${c.name}: no volume ${m.name} on this node`);
    spec.mounts.push({
      destination: m.mountPath,
      type: 'bind',
      source,
      // A Secret volume is read-only whatever the mount says, as the kubelet makes it.
      options: ['rbind', 'rprivate', m.readOnly || vol.secret ? 'ro' : 'rw'],
    });
  }
  // hostPorts: the pod is reached on the node's address, so it shares the node's network namespace.
  spec.linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== 'network');
  const limit = c.resources?.limits?.memory;
  if (limit) spec.linux.resources = { ...spec.linux.resources, memory: { limit: memoryBytes(limit) } };
  spec.linux.cgroupsPath = `/${POD_NAMESPACE}/${id}`;
  if (!spec.linux.seccomp) throw new Error('containerd gave no default seccomp profile');
  return spec;
}

export interface RunningContainer {
  readonly id: string;
  readonly logFile: string;
  logs(): string;
  /** The task's pid on this machine, while it runs. */
  pid(): Promise<number | undefined>;
  /** `ctr tasks kill -s <signal>`. */
  kill(signal?: string): Promise<void>;
  /** Waits for the task to stop, deletes task, container, rootfs mount and snapshot; the exit code. */
  wait(timeoutMs?: number): Promise<number>;
  /** SIGKILL if still running, then as `wait` (for clean-up after a failure). */
  dispose(): Promise<void>;
}

/** Starts the container (detached; output to a log file in `dir`). */
export async function startContainer(pc: PodContainer, dir: string): Promise<RunningContainer> {
  const { node, image, id } = pc;
  const ctr = (args: string[], timeoutMs?: number) =>
    node.ctr(args, { namespace: POD_NAMESPACE, ...(timeoutMs ? { timeoutMs } : {}) });
  const rootfs = join(dir, `${id}.rootfs`);
  const specFile = join(dir, `${id}.spec.json`);
  const logFile = join(dir, `${id}.log`);
  mkdirSync(rootfs, { recursive: true });
  // A snapshot over the image's top layer, mounted where the spec's root points. It is writable, as CRI's
  // is: runc creates the mount points in it, then makes the root read-only (root.readonly).
  await ctr(['snapshots', '--snapshotter', node.snapshotter, 'prepare', id, image.chainId]);
  const release = async () => {
    await execFileP('umount', [rootfs]).catch(() => {});
    await ctr(['snapshots', '--snapshotter', node.snapshotter, 'rm', id]).catch(() => {});
    rmSync(rootfs, { recursive: true, force: true });
  };
  try {
    const mounts = await ctr(['snapshots', '--snapshotter', node.snapshotter, 'mounts', rootfs, id]);
    for (const line of mounts.split('\n').filter((l) => l.trim())) await execFileP('sh', ['-c', line]);
    writeFileSync(specFile, JSON.stringify(await specFor(pc, rootfs), null, 2));
    await ctr(['run', '--detach', '--log-uri', `file://${logFile}`, '--config', specFile, id]);
  } catch (err) {
    await ctr(['containers', 'delete', id]).catch(() => {});
    await release();
    throw err;
  }

  const taskRow = async () =>
    (await ctr(['tasks', 'ls']))
      .split('\n')
      .find((l) => l.split(/\s+/)[0] === id)
      ?.split(/\s+/);
  const handle: RunningContainer = {
    id,
    logFile,
    logs() {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    async pid() {
      const row = await taskRow();
      return row && row[2] === 'RUNNING' ? Number(row[1]) : undefined;
    },
    async kill(signal = 'SIGTERM') {
      await ctr(['tasks', 'kill', '--signal', signal, id]);
    },
    async wait(timeoutMs = 60_000) {
      await waitFor(async () => (await taskRow())?.[2] === 'STOPPED', {
        timeoutMs,
        intervalMs: 200,
        what: `${id} to stop`,
      });
      let code = 0;
      try {
        await ctr(['tasks', 'delete', id]);
      } catch (err) {
        const m = /exit status (\d+)/.exec((err as Error).message);
        code = m ? Number(m[1]) : -1;
        if (code === -1) throw err;
      }
      await ctr(['containers', 'delete', id]);
      await release();
      return code;
    },
    async dispose() {
      if (await handle.pid()) await handle.kill('SIGKILL').catch(() => {});
      await handle.wait(20_000);
    },
  };
  return handle;
}
