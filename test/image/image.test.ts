/**
 * The image (scripts/image.sh's OCI archive) run as the chart runs it, on two "nodes" with real
 * containerd and runc: the containers come from real Helm's render of the chart (the DaemonSet's init
 * container `configure` and container `agent`, the cleanup DaemonSet's `cleanup`), each run with its
 * args, env, securityContext, hostPath mounts and memory limit (test/image/pod.ts). Asserts: the hosts
 * file is written; /readyz turns ready once the agents see each other; a containerd restart under the
 * agent is survived; a pull on node 2 is served by node 1 with the upstream stopped; SIGTERM exits 0;
 * `configure --cleanup` restores the hosts directory.
 *
 * Everything runs in a network namespace of its own (the file re-runs itself under `unshare --net`), so
 * the agents' wildcard listeners (`:5000`, as the chart sets them) collide with nothing on the machine.
 * Node 1 is 127.0.0.11 with the chart's ports, node 2 127.0.0.12 with other ports (both share the
 * namespace's loopback), the upstream registry 127.0.0.2:5500.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chart, find, type Obj, podSpec, render, repoRoot } from '../deploy/k8s.ts';
import {
  type BuiltImage,
  buildImage,
  type ContainerdHandle,
  parsePrometheus,
  pushImage,
  type RegistryHandle,
  startContainerd,
  startRegistry,
  waitFor,
} from '../rig/index.ts';
import {
  type ImportedImage,
  importImage,
  type KubePodSpec,
  type PodContext,
  type RunningContainer,
  startContainer,
} from './pod.ts';

const INNER = 'FERRY_IMAGE_TEST_NETNS';
const archive = process.env.FERRY_IMAGE_ARCHIVE ?? join(repoRoot, '.image', 'ferry.oci.tar');

interface Node {
  name: string;
  ip: string;
  ports: { registry: number; router: number; metrics: number; status: number };
  dir: string;
  containerd: ContainerdHandle;
  image: ImportedImage;
  pod: KubePodSpec;
  cleanupPod: KubePodSpec;
  ctx: PodContext;
  agent?: RunningContainer;
}

const UPSTREAM = '127.0.0.2:5500';
const ORIGINAL_HOSTS = `# this node's own setting for the upstream (plain HTTP)\nserver = "http://${UPSTREAM}"\n`;

function inNamespace(): void {
  const work = mkdtempSync(join(tmpdir(), 'ferry-image-'));
  const nodes: Node[] = [];
  let upstream: RegistryHandle;
  let app: BuiltImage;
  const ref = `${UPSTREAM}/demo/app:v1`;

  const metrics = async (n: Node) =>
    parsePrometheus(await (await fetch(`http://${n.ip}:${n.ports.metrics}/metrics`)).text());
  const metric = async (n: Node, name: string) =>
    [...(await metrics(n))]
      .filter(([k]) => k === name || k.startsWith(`${name}{`))
      .reduce((s, [, v]) => s + v, 0);

  /** Runs a container to completion; its exit code and output. */
  async function runToExit(n: Node, pod: KubePodSpec, name: string): Promise<{ code: number; logs: string }> {
    const c = [...(pod.initContainers ?? []), ...pod.containers].find((x) => x.name === name)!;
    const run = await startContainer(
      { node: n.containerd, image: n.image, pod, container: c, ctx: n.ctx, id: `${n.name}-${name}` },
      n.dir,
    );
    const code = await run.wait();
    return { code, logs: run.logs() };
  }

  /** The cluster's Secrets: those of the first render (the chart generates the network key once). */
  let secrets: Obj[] | undefined;

  before(async () => {
    upstream = await startRegistry({ host: '127.0.0.2', port: 5500, dir: join(work, 'upstream') });
    app = await buildImage({ layers: [2 << 20, 300_000] });
    await pushImage(upstream.url, 'demo/app', 'v1', app);
    const layout = [
      {
        name: 'node1',
        ip: '127.0.0.11',
        ports: { registry: 5000, router: 5001, metrics: 9090, status: 9091 },
        peer: '127.0.0.12:5011',
      },
      {
        name: 'node2',
        ip: '127.0.0.12',
        ports: { registry: 5010, router: 5011, metrics: 9100, status: 9101 },
        peer: '127.0.0.11:5001',
      },
    ];
    for (const l of layout) {
      const dir = join(work, l.name);
      mkdirSync(join(dir, 'data'), { recursive: true });
      const containerd = await startContainerd({ name: l.name, host: l.ip, dir: join(dir, 'containerd') });
      mkdirSync(join(containerd.hostsDir, UPSTREAM), { recursive: true });
      writeFileSync(join(containerd.hostsDir, UPSTREAM, 'hosts.toml'), ORIGINAL_HOSTS);
      // Real Helm's render, with values a user would set for this cluster.
      const objs = render({
        values: {
          service: {
            registry: { port: l.ports.registry },
            router: { port: l.ports.router },
            metrics: { port: l.ports.metrics },
            // Every port the chart has a value for differs between the nodes (one network namespace).
            ...('status' in (chart.values.service as Obj) ? { status: { port: l.ports.status } } : {}),
          },
          ferry: {
            mirroredRegistries: [`http://${UPSTREAM}`],
            bootstrapPeers: [l.peer],
            // A loaded CI machine: the rig's agents use the same (the default is 20ms).
            mirrorResolveTimeout: '1s',
          },
        },
      });
      const hostPaths: Record<string, string> = {
        '/run/containerd': containerd.dir,
        '/var/lib/containerd/io.containerd.content.v1.content': containerd.contentPath,
        '/etc/containerd/certs.d': containerd.hostsDir,
        '/var/lib/ferry': join(dir, 'data'),
      };
      const pod = podSpec(find(objs, 'DaemonSet', 'ferry')) as unknown as KubePodSpec;
      const cleanupPod = podSpec(find(objs, 'DaemonSet', 'ferry-cleanup')) as unknown as KubePodSpec;
      // A Secret volume: the Secret's files as the kubelet writes them (its `items`, else every key),
      // from the render. A cluster has one of each Secret: the first node's render is the cluster's (the
      // chart generates the network key once; later renders find it), so both nodes hold the same key.
      secrets ??= objs.filter((o) => o.obj.kind === 'Secret').map((o) => o.obj);
      const secretDir = (s: { secretName: string; items?: { key: string; path: string }[] }): string => {
        const d = join(dir, 'secrets', s.secretName);
        mkdirSync(d, { recursive: true });
        const secret = secrets!.find((o) => (o.metadata as Obj).name === s.secretName);
        if (!secret) throw new Error(`Secret ${s.secretName} is not in the chart's render`);
        const data = new Map<string, Buffer>();
        for (const [k, b64] of Object.entries((secret.data ?? {}) as Record<string, string>))
          data.set(k, Buffer.from(b64, 'base64'));
        for (const [k, text] of Object.entries((secret.stringData ?? {}) as Record<string, string>))
          data.set(k, Buffer.from(text));
        for (const { key, path } of s.items ?? [...data.keys()].map((k) => ({ key: k, path: k }))) {
          if (!data.has(key)) throw new Error(`Secret ${s.secretName} has no key ${key}`);
          writeFileSync(join(d, path), data.get(key)!, { mode: 0o400 });
        }
        return d;
      };
      const volumes: Record<string, string> = {};
      for (const v of [...(pod.volumes ?? []), ...(cleanupPod.volumes ?? [])]) {
        const local = v.hostPath ? hostPaths[v.hostPath.path] : v.secret ? secretDir(v.secret) : undefined;
        if (!local) throw new Error(`volume ${v.name} (${JSON.stringify(v)}) has no stand-in on this node`);
        volumes[v.name] = local;
      }
      const image = await importImage(containerd, archive);
      nodes.push({
        name: l.name,
        ip: l.ip,
        ports: l.ports,
        dir,
        containerd,
        image,
        pod,
        cleanupPod,
        ctx: { nodeIp: l.ip, podIp: l.ip, volumes },
      });
    }
  });

  after(async () => {
    for (const n of nodes) {
      await n.agent?.dispose().catch(() => {});
      await n.containerd.dispose().catch(() => {});
    }
    await upstream?.dispose();
    if (!process.env.FERRY_RIG_KEEP) rmSync(work, { recursive: true, force: true });
  });

  describe('the image run as the chart runs it', () => {
    test('the init container `ferry configure` writes the hosts file, keeping the node’s own', async () => {
      for (const n of nodes) {
        const { code, logs } = await runToExit(n, n.pod, 'configure');
        assert.equal(code, 0, logs);
        const hosts = readFileSync(join(n.containerd.hostsDir, UPSTREAM, 'hosts.toml'), 'utf8');
        assert.match(hosts, new RegExp(`\\[host\\."http://${n.ip}:${n.ports.registry}"\\]`));
        assert.match(hosts, new RegExp(`server = "http://${UPSTREAM}"`));
      }
    });

    test('the agents turn ready once they see each other', async () => {
      for (const n of nodes) {
        const c = n.pod.containers.find((x) => x.name === 'agent')!;
        n.agent = await startContainer(
          { node: n.containerd, image: n.image, pod: n.pod, container: c, ctx: n.ctx, id: `${n.name}-agent` },
          n.dir,
        );
      }
      for (const n of nodes) {
        await waitFor(
          async () => (await fetch(`http://${n.ip}:${n.ports.metrics}/readyz`).catch(() => undefined))?.ok,
          { timeoutMs: 60_000, intervalMs: 250, what: `${n.name} /readyz\n${n.agent?.logs().slice(-3000)}` },
        );
      }
      // The containerised agent's resident memory once idle (reported, not asserted).
      await new Promise((r) => setTimeout(r, 5000));
      for (const n of nodes) {
        const pid = await n.agent!.pid();
        const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
        process.stdout.write(`# ${n.name} agent idle VmRSS ${Math.round(Number(rss) / 1024)} MiB\n`);
      }
    });

    test('a containerd restart under the agent is survived', async () => {
      const n = nodes[0]!;
      const pid = await n.agent!.pid();
      await n.containerd.restart();
      assert.equal(await n.agent!.pid(), pid, 'the agent kept running');
      // Content that arrives after the restart is advertised: the agent is back on containerd's API.
      await n.containerd.criPull(ref);
      // The tag key is advertised once the agent's tracker saw the image (with first-pull sharing on, node 2
      // can already fetch the digests through node 1's spool or the upstream before that).
      await waitFor(async () => ((await metrics(n)).get('ferry_advertised_keys{kind="tag"}') ?? 0) >= 1, {
        timeoutMs: 60_000,
        intervalMs: 250,
        what: 'node 1 advertising the tag',
      });
      await waitFor(
        async () => {
          const res = await fetch(
            `http://${nodes[1]!.ip}:${nodes[1]!.ports.registry}/v2/demo/app/manifests/${app.digest}?ns=${UPSTREAM}`,
            {
              method: 'HEAD',
            },
          );
          return res.status === 200;
        },
        { timeoutMs: 60_000, intervalMs: 500, what: 'node 2 finding the image on node 1' },
      );
    });

    test('a pull on node 2 is served by node 1 with the upstream stopped', async () => {
      const [a, b] = nodes as [Node, Node];
      await upstream.stop();
      const served = await metric(a, 'ferry_peer_served_bytes_total');
      await b.containerd.criPull(ref);
      const layers = app.layers.reduce((s, l) => s + l.size, 0);
      assert.ok((await metric(b, 'ferry_peer_fetched_bytes_total')) >= layers);
      assert.ok((await metric(a, 'ferry_peer_served_bytes_total')) - served >= layers);
    });

    test('SIGTERM stops the agents with exit code 0', async () => {
      for (const n of nodes) await n.agent!.kill('SIGTERM');
      for (const n of nodes) {
        const agent = n.agent!;
        n.agent = undefined;
        assert.equal(await agent.wait(30_000), 0, agent.logs().slice(-3000));
      }
    });

    test('the cleanup container `ferry configure --cleanup` restores the hosts directory', async () => {
      for (const n of nodes) {
        const { code, logs } = await runToExit(n, n.cleanupPod, 'cleanup');
        assert.equal(code, 0, logs);
        assert.deepEqual(readdirSync(n.containerd.hostsDir, { recursive: true }).sort(), [
          UPSTREAM,
          `${UPSTREAM}/hosts.toml`,
        ]);
        assert.equal(
          readFileSync(join(n.containerd.hostsDir, UPSTREAM, 'hosts.toml'), 'utf8'),
          ORIGINAL_HOSTS,
        );
      }
    });
  });
}

if (!process.env[INNER]) {
  test('the image test, in a network namespace of its own', async () => {
    assert.ok(existsSync(archive), `${archive} missing: build the image first (bash scripts/image.sh)`);
    const file = fileURLToPath(import.meta.url);
    // A test runner of its own in the namespace (NODE_TEST_CONTEXT would make it skip the file).
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const innerEnv = { ...env, [INNER]: '1' };
    const child = spawn(
      'unshare',
      [
        '--net',
        '--',
        'sh',
        '-c',
        'ip link set lo up && exec "$@"',
        'sh',
        process.execPath,
        '--test',
        '--test-reporter=spec',
        '--test-timeout=600000',
        file,
      ],
      { env: innerEnv, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
      process.stderr.write(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d;
      process.stderr.write(d);
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, `the image test failed:\n${out.slice(-6000)}`);
    assert.match(out, /^ℹ pass [1-9]\d*$/m, 'the image test ran no test');
    assert.match(out, /^ℹ fail 0$/m);
  });
} else {
  inNamespace();
}
