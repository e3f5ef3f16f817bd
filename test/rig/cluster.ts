import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configureHosts } from '../../packages/agent/src/configure.ts';
import { AGENT_PORTS, type AgentHandle, startAgent } from './agent.ts';
import { type ContainerdHandle, startContainerd } from './containerd.ts';
import type { Cleanup } from './daemon.ts';
import { type AddressBlock, allocateBlock } from './net.ts';
import { type RegistryHandle, startRegistry } from './registry.ts';
import { type ShapingProxyHandle, startShapingProxy } from './shaping-proxy.ts';

export interface ClusterOptions {
  /** Number of nodes (default 3). */
  nodes?: number;
  /** Extra `ferry agent` flags for every node, or per node (index 0 = node 1). */
  agentArgs?: string[] | ((i: number) => string[]);
  /** Write hosts.toml with `resolve` (tag) capability for the mirror (default true). */
  resolveTags?: boolean;
  /**
   * Give every agent the cluster's network key file (`--network-key-file`, one random key), as the
   * chart does (default true); `false` runs the agents without a key.
   */
  networkKey?: boolean;
  /** Start the agents (default true); `false` leaves them for the test to start with `node.startAgent()`. */
  startAgents?: boolean;
  /** Extra environment of every agent, e.g. `chartEnv()` to run them as the chart does. */
  agentEnv?: Record<string, string>;
  /** Node flags of every agent, e.g. `imageNodeArgs()` (the image's ENTRYPOINT). */
  agentNodeArgs?: string[];
  /**
   * Put a shaping proxy in front of the upstream (all blob bodies on one link at `rateBytesPerSec`):
   * images are then pulled through it (`ref()` names it) and the agents get it in --mirrored-registries.
   */
  proxy?: { rateBytesPerSec?: number };
  /** The CLI file the agents run (default: the TypeScript sources; e.g. the bundled build). */
  agentEntry?: string;
  /** Registers teardown with the test. */
  t?: Cleanup;
}

export interface ClusterNode {
  readonly index: number;
  readonly name: string;
  readonly host: string;
  readonly dir: string;
  readonly containerd: ContainerdHandle;
  /** The node's agent; undefined until started. */
  agent: AgentHandle | undefined;
  /** Starts this node's agent (bootstrapped from every other node's router address). */
  startAgent(extraArgs?: string[]): Promise<AgentHandle>;
  /** `ctr images pull` through the node's hosts dir (so through its agent), as a kubelet's containerd would. */
  pull(ref: string, opts?: { timeoutMs?: number }): Promise<void>;
}

export interface Cluster {
  readonly block: AddressBlock;
  readonly upstream: RegistryHandle;
  /** The shaping proxy in front of the upstream (`proxy` option). */
  readonly proxy?: ShapingProxyHandle;
  readonly nodes: ClusterNode[];
  /** The network key every agent was given (`networkKey` option), for tests that act as a member. */
  readonly networkKey?: Uint8Array;
  /** `host:port/<repo>:<tag>` on the upstream (on the proxy when there is one). */
  ref(repoTag: string): string;
  dispose(): Promise<void>;
}

/**
 * A cluster on loopback: a real upstream `docker-registry`, N real containerd daemons (each with its own
 * root, state, socket and hosts dir; CRI on), and N Ferry agents, node i on `127.a.b.(10+i)` with the
 * same ports everywhere. Each node's hosts.toml (written by `configureHosts`, what `ferry configure`
 * runs, in this process: a CLI process per node cost seconds of CPU each) sends pulls of the upstream to
 * the node's own agent first. Teardown stops every agent at once, then every containerd, then the rest.
 */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const n = opts.nodes ?? 3;
  const block = allocateBlock();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-cluster-'));
  // Teardown in stages, each stage's parts at once: agents, then containerd daemons, then the upstream.
  const stages: (() => Promise<unknown>)[][] = [[], [], []];
  const [agentStops, nodeStops, disposers] = stages as [
    (() => Promise<unknown>)[],
    (() => Promise<unknown>)[],
    (() => Promise<unknown>)[],
  ];
  const dispose = async () => {
    for (const stage of stages) {
      const parts = stage.splice(0).reverse();
      await Promise.all(parts.map((d) => d().catch(() => undefined)));
    }
    if (!process.env.FERRY_RIG_KEEP) rmSync(dir, { recursive: true, force: true });
    block.release();
  };
  opts.t?.after(dispose);
  try {
    const upstream = await startRegistry({ host: block.upstream, dir: join(dir, 'upstream') });
    disposers.push(() => upstream.dispose());
    const proxy =
      opts.proxy === undefined
        ? undefined
        : await startShapingProxy({
            host: block.host(3),
            upstream: upstream.url,
            ...(opts.proxy.rateBytesPerSec === undefined
              ? {}
              : { rateBytesPerSec: opts.proxy.rateBytesPerSec }),
          });
    if (proxy !== undefined) disposers.push(() => proxy.stop());
    const front = proxy ?? upstream;
    const keyArgs: string[] = [];
    const networkKey = opts.networkKey === false ? undefined : randomBytes(32);
    if (networkKey !== undefined) {
      const keyFile = join(dir, 'network.key');
      writeFileSync(keyFile, `${networkKey.toString('hex')}\n`, { mode: 0o600 });
      keyArgs.push(`--network-key-file=${keyFile}`);
    }
    const routers = Array.from({ length: n }, (_, i) => `${block.node(i + 1)}:${AGENT_PORTS.router}`);
    const nodes = await Promise.all(
      Array.from({ length: n }, async (_, i): Promise<ClusterNode> => {
        const index = i + 1;
        const host = block.node(index);
        const name = `node${index}`;
        const nodeDir = join(dir, name);
        mkdirSync(nodeDir, { recursive: true });
        const containerd = await startContainerd({ name, host, dir: join(nodeDir, 'containerd') });
        nodeStops.push(() => containerd.dispose());
        await configureHosts({
          hostsDir: containerd.hostsDir,
          mirrorTargets: [`http://${host}:${AGENT_PORTS.registry}`],
          mirroredRegistries: [front.url],
          resolveTags: opts.resolveTags !== false,
        });
        const node: ClusterNode = {
          index,
          name,
          host,
          dir: nodeDir,
          containerd,
          agent: undefined,
          async startAgent(extraArgs = []) {
            const perNode = typeof opts.agentArgs === 'function' ? opts.agentArgs(i) : (opts.agentArgs ?? []);
            const agent = await startAgent({
              name,
              host,
              containerd,
              dir: join(nodeDir, 'agent'),
              bootstrapPeers: routers.filter((_, j) => j !== i),
              ...(opts.agentEntry === undefined ? {} : { entry: opts.agentEntry }),
              args: [
                ...keyArgs,
                ...(proxy ? [`--mirrored-registries=${proxy.url}`] : []),
                ...perNode,
                ...extraArgs,
              ],
              ...(opts.agentEnv ? { env: opts.agentEnv } : {}),
              ...(opts.agentNodeArgs ? { nodeArgs: opts.agentNodeArgs } : {}),
            });
            agentStops.push(() => agent.stop());
            node.agent = agent;
            return agent;
          },
          pull: (ref, o) => containerd.pull(ref, o),
        };
        return node;
      }),
    );
    if (opts.startAgents !== false) await Promise.all(nodes.map((node) => node.startAgent()));
    return {
      block,
      upstream,
      ...(proxy ? { proxy } : {}),
      nodes,
      ...(networkKey === undefined ? {} : { networkKey }),
      ref: (repoTag) => `${front.host}/${repoTag}`,
      dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}
