// A P2P test cluster spread over a few child processes (worker.ts): node i runs in worker
// i % workers, on its own loopback address. Used by the 25-node test and the scale benchmark.
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { P2PStats } from '../../src/index.ts';
import { until as poll } from '../until.ts';
import type { Timeline } from './timeline.ts';
import type { Command, GetResult, LookupResult, NodeEvents, StartArgs } from './worker.ts';

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };
type Reply = { id: number; ok: boolean; value?: unknown; error?: string };
// a command without its id; the union stays a union
type Without<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
type Call = Without<Command, 'id'>;

class Worker {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  readonly ready: Promise<void>;

  constructor() {
    this.child = fork(WORKER, [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let started: () => void = () => {};
    this.ready = new Promise((r) => {
      started = r;
    });
    this.child.on('message', (m: Reply) => {
      if (m.id === 0) {
        started();
        return;
      }
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.ok) {
        p?.resolve(m.value);
      } else {
        p?.reject(new Error(m.error));
      }
    });
    this.child.on('exit', () => {
      for (const p of this.pending.values()) {
        p.reject(new Error('worker exited'));
      }
      this.pending.clear();
    });
  }

  /** Send a signal to the worker process (SIGSTOP freezes every node in it: a silent host). */
  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  call<T>(cmd: Call): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ ...cmd, id });
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) {
      return;
    }
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

export interface ClusterNode {
  peerId: string;
  addresses: string[];
}

export class Cluster {
  private readonly workers: Worker[];
  /** Running nodes by index. */
  readonly nodes = new Map<number, ClusterNode>();
  private readonly net: string;

  /** `net`: the loopback prefix, e.g. `127.77.40` (node i listens on `<net>.<i + 1>`). */
  constructor(workers: number, net: string) {
    this.workers = Array.from({ length: workers }, () => new Worker());
    this.net = net;
  }

  private worker(i: number): Worker {
    return this.workers[i % this.workers.length] as Worker;
  }

  host(i: number): string {
    return `${this.net}.${i + 1}`;
  }

  async start(i: number, args: Omit<StartArgs, 'host'> = {}): Promise<ClusterNode> {
    await this.worker(i).ready;
    const node = await this.worker(i).call<ClusterNode>({
      op: 'start',
      node: i,
      args: { ...args, host: this.host(i) },
    });
    this.nodes.set(i, node);
    return node;
  }

  advertise(i: number, keys: string[]): Promise<void> {
    return this.worker(i).call({ op: 'advertise', node: i, keys });
  }

  lookup(i: number, key: string, timeoutMs = 5_000, want?: string): Promise<LookupResult> {
    return this.worker(i).call({ op: 'lookup', node: i, key, timeoutMs, ...(want ? { want } : {}) });
  }

  /** Node i (started with `registry`) holds `manifests` new manifests and advertises them: their digests. */
  store(i: number, manifests: number): Promise<string[]> {
    return this.worker(i).call({ op: 'store', node: i, manifests });
  }

  /**
   * GET a manifest by digest through node i's registry, as its containerd would: on a new connection,
   * or (`keepAlive`) on the node's kept-alive client connection.
   */
  get(i: number, digest: string, keepAlive = false): Promise<GetResult> {
    return this.worker(i).call({ op: 'get', node: i, digest, keepAlive });
  }

  /** CPU time (ms) used so far by all worker processes together. */
  async cpuMs(): Promise<number> {
    const each = await Promise.all(this.workers.map((w) => w.call<number>({ op: 'cpu', node: -1 })));
    return each.reduce((a, b) => a + b, 0);
  }

  /** Start every worker's CPU profiler, or stop them and return their profiles. */
  profile(start: boolean): Promise<unknown[]> {
    return Promise.all(this.workers.map((w) => w.call<unknown>({ op: 'profile', node: -1, start })));
  }

  /** Start tracing every worker process (cluster/timeline.ts), or stop and return their timelines. */
  trace(start: boolean): Promise<(Timeline | null)[]> {
    return Promise.all(this.workers.map((w) => w.call<Timeline | null>({ op: 'trace', node: -1, start })));
  }

  /** The worker process (index) that runs node i. */
  workerOf(i: number): number {
    return i % this.workers.length;
  }

  /** Node i dials node j once more, forcing a second connection (as a simultaneous dial leaves). */
  dialAgain(i: number, j: number): Promise<void> {
    const target = this.nodes.get(j)?.addresses[0];
    if (target === undefined) {
      throw new Error(`node ${j} is not running`);
    }
    return this.worker(i).call({ op: 'dial', node: i, addr: target });
  }

  /**
   * Start nodes 1..size-1 in waves of one per worker, each bootstrapping from node 0's first
   * address (node 0 must run), then wait up to `timeoutMs` until every node has every other as a
   * peer. Resolves to how many nodes did.
   */
  async startMesh(size: number, args: Omit<StartArgs, 'host'>, timeoutMs: number): Promise<number> {
    const first = this.nodes.get(0)?.addresses[0];
    if (first === undefined) {
      throw new Error('node 0 runs no node with a listen address to bootstrap from');
    }
    const bootstrap = [first];
    const workers = this.workers.length;
    for (let i = 1; i < size; i += workers) {
      const wave = Array.from({ length: Math.min(workers, size - i) }, (_, j) => i + j);
      await Promise.all(wave.map((n) => this.start(n, { ...args, bootstrap })));
    }
    const all = [...this.nodes.keys()];
    const counts = () => Promise.all(all.map((i) => this.peers(i)));
    await until('mesh', async () => (await counts()).every((n) => n === size - 1), timeoutMs).catch(() => {});
    return (await counts()).filter((n) => n === size - 1).length;
  }

  /** Signal the process that runs node i (and every other node in it). */
  signal(i: number, signal: NodeJS.Signals): void {
    this.worker(i).kill(signal);
  }

  peers(i: number): Promise<number> {
    return this.worker(i).call({ op: 'peers', node: i });
  }

  /** Node i traces `peer` from now on (its connect, identify, first record: in `events`). */
  watch(i: number, peer: string): Promise<void> {
    return this.worker(i).call({ op: 'watch', node: i, peer });
  }

  events(i: number): Promise<NodeEvents> {
    return this.worker(i).call({ op: 'events', node: i });
  }

  stats(i: number): Promise<P2PStats> {
    return this.worker(i).call({ op: 'stats', node: i });
  }

  async stop(i: number): Promise<void> {
    this.nodes.delete(i);
    await this.worker(i).call({ op: 'stop', node: i });
  }

  /** Stop every worker (each stops its nodes). */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }
}

/** {@link poll} with deadlines for a cluster on a loaded machine: 120 s, every 100 ms. */
export function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 120_000) {
  return poll(what, check, timeoutMs, 100);
}
