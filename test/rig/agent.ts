import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ContainerdHandle } from './containerd.ts';
import { type Cleanup, type Daemon, spawnDaemon } from './daemon.ts';
import { waitFor } from './net.ts';

/** The `ferry` CLI entry, run with the same Node 24 as the tests. */
export const ferryCli = fileURLToPath(new URL('../../packages/agent/src/cli.ts', import.meta.url));

/** Well-known ports: every node uses the same ones on its own address, as in a cluster. */
export const AGENT_PORTS = { registry: 5000, router: 5001, metrics: 9090, status: 9091 } as const;

export interface AgentRigOptions {
  /** Node name (logs, messages). */
  name: string;
  /** The node's loopback address: registry, router and metrics listen there. */
  host: string;
  /** The node's containerd (socket, content dir). */
  containerd: ContainerdHandle;
  /** Directory for the agent's data dir and log file. */
  dir: string;
  /** Bootstrap peers (`ip:port`). */
  bootstrapPeers?: string[];
  /** Extra CLI flags, e.g. `['--resolve-tags=false']`. */
  args?: string[];
  /** Extra environment (`FERRY_…`). */
  env?: Record<string, string>;
  /** The CLI file Node runs (default: the TypeScript sources, `ferryCli`; e.g. the bundled build). */
  entry?: string;
  /** Node options before the entry, e.g. `['--max-semi-space-size=1']`. */
  nodeArgs?: string[];
  t?: Cleanup;
}

export interface AgentHandle {
  readonly name: string;
  readonly host: string;
  /** `http://host:5000`: the registry containerd and peers pull from. */
  readonly registryUrl: string;
  /** `http://host:9090`: /metrics, /healthz, /readyz. */
  readonly opsUrl: string;
  /** `http://host:9091`: the status page, /status, /debug/measure (loopback clients only). */
  readonly statusUrl: string;
  readonly logFile: string;
  /** Starts the agent (again); resolves when /healthz answers. */
  start(): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 15 s); resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL (no drain); resolves when the process is gone. */
  kill(): Promise<void>;
  running(): boolean;
  /** Exit code of the last run (null while running or when killed by a signal). */
  exitCode(): number | null;
  logs(bytes?: number): string;
  /** Waits until /readyz says ready. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Parsed Prometheus samples: `name{labels}` -> value, summed over matching label sets by `metric()`. */
  metrics(): Promise<Map<string, number>>;
  /** Sum of every sample of `name` whose labels include `labels`. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** GET /status as JSON. */
  status(): Promise<Record<string, unknown>>;
}

/** Parses the Prometheus text format into `name{a="x",b="y"}` -> value. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

function labelsOf(key: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const body = /\{(.*)\}$/.exec(key)?.[1] ?? '';
  for (const m of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
  return labels;
}

/** Starts `ferry agent` for one rig node, listening on the node's address with the well-known ports. */
export async function startAgent(opts: AgentRigOptions): Promise<AgentHandle> {
  const dataDir = join(opts.dir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const logFile = join(opts.dir, 'agent.log');
  const registryUrl = `http://${opts.host}:${AGENT_PORTS.registry}`;
  const opsUrl = `http://${opts.host}:${AGENT_PORTS.metrics}`;
  const statusUrl = `http://${opts.host}:${AGENT_PORTS.status}`;
  const args = [
    ...(opts.nodeArgs ?? []),
    opts.entry ?? ferryCli,
    'agent',
    `--registry-addr=${opts.host}:${AGENT_PORTS.registry}`,
    `--router-addr=${opts.host}:${AGENT_PORTS.router}`,
    `--metrics-addr=${opts.host}:${AGENT_PORTS.metrics}`,
    `--status-addr=${opts.host}:${AGENT_PORTS.status}`,
    `--containerd-sock=${opts.containerd.socket}`,
    `--containerd-content-path=${opts.containerd.contentPath}`,
    `--containerd-config-path=${opts.containerd.hostsDir}`,
    `--data-dir=${dataDir}`,
    '--log-level=debug',
    // Tests share two cores among several containerd daemons and agents: a DHT lookup that a quiet node
    // answers in a few ms can stall past the production default (20 ms) here and turn a hit into a miss.
    // Nothing in the tests asserts time; a later flag in `args` overrides this.
    '--mirror-resolve-timeout=1s',
    // The scenarios describe the mirror for content some node holds; first-pull sharing (the agent
    // fetching from the upstream itself) is switched on by the tests about it (`--first-pull`).
    '--first-pull=false',
    ...(opts.bootstrapPeers?.length ? [`--bootstrap-peers=${opts.bootstrapPeers.join(',')}`] : []),
    ...(opts.args ?? []),
  ];
  let daemon: Daemon | undefined;

  async function start(): Promise<void> {
    if (daemon?.running()) return;
    const env = { ...process.env, ...opts.env };
    daemon = spawnDaemon(process.execPath, args, logFile, env);
    const d = daemon;
    try {
      await waitFor(
        async () => {
          if (!d.running()) throw new Error(`agent ${opts.name} exited:\n${d.logs()}`);
          const res = await fetch(`${opsUrl}/healthz`).catch(() => undefined);
          return res?.ok === true;
        },
        { timeoutMs: 90_000, what: `agent ${opts.name} /healthz` },
      );
    } catch (err) {
      // Nobody holds a handle to an agent that never came up: stop it here, or it outlives the test.
      await d.stop(2_000);
      throw new Error(`${(err as Error).message}\n--- ${logFile}\n${d.logs()}`);
    }
  }

  async function metrics(): Promise<Map<string, number>> {
    const res = await fetch(`${opsUrl}/metrics`);
    if (!res.ok) throw new Error(`GET ${opsUrl}/metrics: ${res.status}`);
    return parsePrometheus(await res.text());
  }

  const handle: AgentHandle = {
    name: opts.name,
    host: opts.host,
    registryUrl,
    opsUrl,
    statusUrl,
    logFile,
    start,
    async stop(graceMs = 15_000) {
      await daemon?.stop(graceMs);
    },
    async kill() {
      if (daemon?.running() && daemon.pid !== undefined) process.kill(daemon.pid, 'SIGKILL');
      await daemon?.stop(0);
    },
    running: () => daemon?.running() ?? false,
    exitCode: () => daemon?.exitCode() ?? null,
    logs: (bytes?: number) => daemon?.logs(bytes) ?? '',
    async waitReady(timeoutMs = 30_000) {
      await waitFor(async () => (await fetch(`${opsUrl}/readyz`).catch(() => undefined))?.ok === true, {
        timeoutMs,
        what: `agent ${opts.name} /readyz`,
      });
    },
    metrics,
    async metric(name, labels = {}) {
      let sum = 0;
      for (const [key, value] of await metrics()) {
        if (key !== name && !key.startsWith(`${name}{`)) continue;
        const l = labelsOf(key);
        if (Object.entries(labels).every(([k, v]) => l[k] === v)) sum += value;
      }
      return sum;
    },
    async status() {
      const res = await fetch(`${statusUrl}/status`);
      return (await res.json()) as Record<string, unknown>;
    },
  };
  opts.t?.after(() => handle.stop());
  await start();
  return handle;
}
