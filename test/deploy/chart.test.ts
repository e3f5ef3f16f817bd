/**
 * Checks on the Helm chart (deploy/charts/ferry) with real Helm: `helm lint --strict`, and every
 * `helm template` (defaults and every optional part) parses as YAML, every object validates against its Kubernetes schema, values.yaml validates against
 * values.schema.json (which rejects misspellings and wrong types), every agent flag has a value and an
 * env mapping, every value changes the output, the init container's arguments work with the real
 * `ferry configure`, and the webhook and DaemonSet keep the properties the design asks for.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Ajv } from 'ajv';
import { buildProgram, main as ferryMain } from '../../packages/agent/src/cli.ts';
import { type AgentOptionName, agentOptions, resolveAgentConfig } from '../../packages/agent/src/config.ts';
import { helm, parseRendered, renderChart } from './helm.ts';
import {
  chart,
  chartDir,
  container,
  envOf,
  everythingOn,
  find,
  type Obj,
  optionsNotInChart,
  podSpec,
  render,
  validateObject,
  withCertManager,
} from './k8s.ts';

const schema = JSON.parse(await readFile(join(chartDir, 'values.schema.json'), 'utf8')) as Obj;
const ajv = new Ajv({ allErrors: true, strict: true });
const validateValues = ajv.compile(schema);

function setPath(target: Obj, path: string, value: unknown): Obj {
  const keys = path.split('.');
  let cur = target;
  for (const k of keys.slice(0, -1)) {
    cur[k] = structuredClone(cur[k] ?? {});
    cur = cur[k] as Obj;
  }
  cur[keys.at(-1)!] = value;
  return target;
}

function getPath(target: unknown, path: string): unknown {
  let cur = target;
  for (const k of path.split('.')) cur = (cur as Obj | undefined)?.[k];
  return cur;
}

/** Values overrides: one path set to a value (the rest of each map is kept by the merge). */
function override(path: string, value: unknown): Obj {
  return setPath({}, path, value);
}

function agentEnv(values: Obj = {}, apiVersions?: string[]): Map<string, string> {
  const ds = find(render({ values, ...(apiVersions ? { apiVersions } : {}) }), 'DaemonSet', 'ferry');
  return envOf(container(ds, 'agent'));
}

/** Kubernetes' $(VAR) expansion, for the variables the chart defines from the downward API. */
function expand(s: string): string {
  return s.replaceAll('$(NODE_IP)', '127.0.0.1').replaceAll('$(POD_IP)', '127.0.0.2');
}

describe('chart templates', () => {
  const variants: [string, Parameters<typeof render>[0]][] = [
    ['defaults', {}],
    ['everything on, cert-manager present', { values: everythingOn, apiVersions: withCertManager }],
    ['everything on, chart-generated TLS', { values: everythingOn }],
    ['cleanup off', { values: { cleanup: { enabled: false } } }],
    [
      'pinner without webhook, no mirror config, no persistence',
      {
        values: {
          pinner: { enabled: true, resolveTags: { enabled: false }, tls: { source: 'chart' } },
          ferry: { containerdMirrorAdd: false, dataDir: '', containerdContentPath: '' },
        },
      },
    ],
  ];
  for (const [name, opts] of variants) {
    it(`render as YAML and validate against the Kubernetes schemas: ${name}`, () => {
      const objs = render(opts);
      assert.ok(objs.length >= 4, `only ${objs.length} objects`);
      for (const o of objs) validateObject(o);
      // Names are unique per kind.
      const ids = objs.map((o) => `${o.obj.kind}/${(o.obj.metadata as Obj).name}`);
      assert.deepEqual(ids, [...new Set(ids)]);
    });
  }

  for (const [name, values] of [
    ['defaults', {}],
    ['everything on', everythingOn],
    ['cleanup off', { cleanup: { enabled: false } }],
  ] as const) {
    it(`pass helm lint --strict: ${name}`, () => {
      const out = helm(
        ['lint', '--strict', chartDir, '--namespace', 'ferry', '-f', '-'],
        JSON.stringify(values),
      );
      assert.match(out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    });
  }

  it('are refused by helm when values break values.schema.json', () => {
    assert.throws(
      () => renderChart({ values: { ferry: { mirrorResolveTimeout: 'fast' } } }),
      /values don't meet the specifications of the schema|mirrorResolveTimeout/,
    );
  });

  it('leave out the cleanup hook when cleanup is off', () => {
    const objs = render({ values: { cleanup: { enabled: false } } });
    assert.ok(!objs.some((o) => (o.obj.metadata as { name: string }).name.startsWith('ferry-cleanup')));
  });

  it('reference only values that exist in values.yaml', () => {
    const refs = new Set<string>();
    for (const [path, src] of chart.templates) {
      for (const m of src.matchAll(/\.Values\.([A-Za-z0-9_.]+)/g)) refs.add(m[1]!);
      for (const m of src.matchAll(/\$v\.([A-Za-z0-9_.]+)/g)) refs.add(`ferry.${m[1]!}`);
      assert.ok(!/\$v\b/.test(src) || src.includes('$v := .Values.ferry'), `${path} uses $v`);
    }
    for (const r of refs)
      assert.notEqual(getPath(chart.values, r), undefined, `.Values.${r} is not in values.yaml`);
  });
});

describe('values.schema.json', () => {
  it('accepts values.yaml', () => {
    assert.ok(validateValues(chart.values), JSON.stringify(validateValues.errors, null, 2));
  });

  const rejected: [string, Obj][] = [
    ['a misspelled key', override('ferry.resolveTag', false)],
    ['a misspelled top-level key', { pinnner: { enabled: true } }],
    ['a string for a boolean', override('ferry.resolveTags', 'no')],
    ['a bad duration', override('ferry.mirrorResolveTimeout', 'fast')],
    ['a string for a port', override('service.registry.port', '5000')],
    ['a port out of range', override('service.router.port', 70000)],
    ['an unknown log level', override('ferry.logLevel', 'verbose')],
    ['a list given as a string', override('ferry.registryFilters', ':latest$')],
    [
      'a comma inside a list item (env lists are comma-separated)',
      override('ferry.registryFilters', ['a{1,2}']),
    ],
    ['a webhook timeout above 30s', override('pinner.webhook.timeoutSeconds', 31)],
    ['an unknown TLS source', override('pinner.tls.source', 'vault')],
    ['a mirror target with a path', override('ferry.additionalMirrorTargets', ['http://x:5000/v2'])],
    ['a misspelled toleration field', { tolerations: [{ operater: 'Exists' }] }],
  ];
  for (const [what, over] of rejected) {
    it(`rejects ${what}`, () => {
      const v = structuredClone(chart.values) as Obj;
      for (const [k, x] of Object.entries(over)) v[k] = mergeDeep(v[k], x);
      assert.equal(validateValues(v), false, `accepted ${JSON.stringify(over)}`);
    });
  }

  it('has additionalProperties false on every object (typed maps excepted; affinity passes through)', () => {
    const loose: string[] = [];
    const walk = (node: unknown, path: string) => {
      if (typeof node !== 'object' || node === null) return;
      const n = node as Obj;
      if (n.type === 'object' && n.properties && n.additionalProperties !== false) loose.push(path);
      if (n.type === 'object' && !n.properties && typeof n.additionalProperties !== 'object')
        loose.push(path);
      for (const [k, v] of Object.entries(n)) walk(v, `${path}/${k}`);
    };
    walk(schema, '');
    assert.deepEqual(loose, ['/properties/affinity']);
  });
});

function mergeDeep(base: unknown, over: unknown): unknown {
  if (
    typeof base === 'object' &&
    base &&
    !Array.isArray(base) &&
    typeof over === 'object' &&
    over &&
    !Array.isArray(over)
  ) {
    const out = structuredClone(base) as Obj;
    for (const [k, v] of Object.entries(over)) out[k] = mergeDeep(out[k], v);
    return out;
  }
  return over;
}

// ---------------------------------------------------------------------------------------------------
// Agent flags ↔ values ↔ env

interface FlagMapping {
  /** The value (path in values.yaml) that sets the flag. */
  path: string;
  /** A non-default value for it… */
  sample: unknown;
  /** …and the env value it must produce. */
  env: string;
}
/** Every agent option: its value, the release namespace, or why the chart has none. */
const FLAGS: Record<AgentOptionName, FlagMapping | { exempt: string } | { releaseNamespace: true }> = {
  registryAddr: { path: 'service.registry.port', sample: 15000, env: ':15000' },
  routerAddr: { path: 'service.router.port', sample: 15001, env: ':15001' },
  metricsAddr: { path: 'service.metrics.port', sample: 19090, env: ':19090' },
  statusAddr: { path: 'service.status.port', sample: 19091, env: '127.0.0.1:19091' },
  advertiseHost: { path: 'ferry.advertiseHost', sample: '$(POD_IP)', env: '$(POD_IP)' },
  localClients: {
    path: 'ferry.localClients',
    sample: ['10.0.0.5', '10.1.0.0/16'],
    env: '10.0.0.5,10.1.0.0/16',
  },
  containerdSock: {
    path: 'ferry.containerdSock',
    sample: '/run/k3s/containerd/containerd.sock',
    env: '/run/k3s/containerd/containerd.sock',
  },
  containerdNamespace: { path: 'ferry.containerdNamespace', sample: 'other', env: 'other' },
  containerdContentPath: {
    path: 'ferry.containerdContentPath',
    sample: '/var/lib/k0s/containerd/io.containerd.content.v1.content',
    env: '/var/lib/k0s/containerd/io.containerd.content.v1.content',
  },
  containerdConfigPath: {
    path: 'ferry.containerdConfigPath',
    sample: '/etc/cri/conf.d/hosts',
    env: '/etc/cri/conf.d/hosts',
  },
  dataDir: { path: 'ferry.dataDir', sample: '/var/lib/ferry-2', env: '/var/lib/ferry-2' },
  bootstrapPeers: {
    path: 'ferry.bootstrapPeers',
    sample: ['10.0.0.1:5001', '/ip4/10.0.0.2/tcp/5001'],
    env: '10.0.0.1:5001,/ip4/10.0.0.2/tcp/5001',
  },
  bootstrapDns: { path: 'ferry.bootstrapDns', sample: ['peers.example:5001'], env: 'peers.example:5001' },
  mirroredRegistries: {
    path: 'ferry.mirroredRegistries',
    sample: ['https://docker.io', 'ghcr.io'],
    env: 'https://docker.io,ghcr.io',
  },
  registryFilters: {
    path: 'ferry.registryFilters',
    sample: [':latest$', '^docker.io/x/'],
    env: ':latest$,^docker.io/x/',
  },
  resolveTags: { path: 'ferry.resolveTags', sample: false, env: 'false' },
  tagPolicy: {
    path: 'ferry.tagPolicy',
    sample: [':latest$=upstream', '^docker.io/=cluster'],
    env: ':latest$=upstream,^docker.io/=cluster',
  },
  defaultTagMode: { path: 'ferry.defaultTagMode', sample: 'cluster', env: 'cluster' },
  upstreamTimeout: { path: 'ferry.upstreamTimeout', sample: '3s', env: '3s' },
  upstreamCredentials: {
    path: 'ferry.upstreamCredentialsSecret',
    sample: 'regcred',
    env: '/run/ferry/upstream-credentials/.dockerconfigjson',
  },
  mirrorResolveTimeout: { path: 'ferry.mirrorResolveTimeout', sample: '50ms', env: '50ms' },
  mirrorResolveRetries: { path: 'ferry.mirrorResolveRetries', sample: 5, env: '5' },
  resyncInterval: { path: 'ferry.resyncInterval', sample: '5m', env: '5m' },
  shutdownTimeout: { path: 'ferry.shutdownTimeout', sample: '20s', env: '20s' },
  firstPull: { path: 'ferry.firstPull', sample: false, env: 'false' },
  spoolMaxBytes: { path: 'ferry.spoolMaxBytes', sample: '500Mi', env: '500Mi' },
  logLevel: { path: 'ferry.logLevel', sample: 'debug', env: 'debug' },
  pinner: { path: 'pinner.enabled', sample: true, env: 'true' },
  pinnerAddr: { path: 'pinner.port', sample: 9443, env: ':9443' },
  pinnerTlsCert: { path: 'pinner.enabled', sample: true, env: '/run/ferry/pinner-tls/tls.crt' },
  pinnerTlsKey: { path: 'pinner.enabled', sample: true, env: '/run/ferry/pinner-tls/tls.key' },
  pinnerBudget: { path: 'pinner.budget', sample: '1s', env: '1s' },
  pinnerFreshFor: { path: 'pinner.freshFor', sample: '0', env: '0' },
  pinnerInclude: { path: 'pinner.include', sample: ['^docker.io/'], env: '^docker.io/' },
  pinnerExclude: {
    path: 'pinner.exclude',
    sample: ['^registry.k8s.io/', ':dev$'],
    env: '^registry.k8s.io/,:dev$',
  },
  pinnerNamespace: { releaseNamespace: true },
  networkKeyFile: {
    path: 'ferry.networkKeySecret',
    sample: 'cluster-key',
    env: '/run/ferry/network-key/network.key',
  },
  config: { exempt: optionsNotInChart.config! },
};

describe('agent flags in the chart', () => {
  it('map every flag of agentOptions (and nothing else)', () => {
    assert.deepEqual(Object.keys(FLAGS).sort(), agentOptions.map((o) => o.name).sort());
  });

  for (const o of agentOptions) {
    const m = FLAGS[o.name];
    if ('exempt' in m) {
      it(`${o.flag}: not set (${m.exempt})`, () => {
        assert.equal(agentEnv(everythingOn).has(o.env), false);
      });
      continue;
    }
    if ('releaseNamespace' in m) {
      it(`${o.flag}: the release namespace`, () => {
        const ds = find(render({ namespace: 'ops' }), 'DaemonSet', 'ferry');
        assert.equal(envOf(container(ds, 'agent')).get(o.env), 'ops');
      });
      continue;
    }
    it(`${o.flag}: value ${m.path} sets ${o.env}`, () => {
      assert.notEqual(getPath(chart.values, m.path), undefined, `${m.path} missing from values.yaml`);
      assert.ok(agentEnv().has(o.env), `${o.env} not set with default values`);
      const values = override(m.path, m.sample);
      assert.ok(validateValues(mergeDeep(chart.values, values)), `sample for ${m.path} fails the schema`);
      assert.equal(agentEnv(values).get(o.env), m.env);
    });
  }

  it('set only FERRY_ variables that are agent flags', () => {
    const known = new Set(agentOptions.map((o) => o.env));
    for (const name of agentEnv(everythingOn).keys()) {
      if (!name.startsWith('FERRY_')) continue;
      assert.ok(known.has(name), `${name} is no agent flag`);
    }
  });

  for (const [what, values] of [
    ['defaults', {}],
    [
      'samples',
      Object.values(FLAGS).reduce<Obj>(
        (acc, m) => ('path' in m ? (mergeDeep(acc, override(m.path, m.sample)) as Obj) : acc),
        {},
      ),
    ],
  ] as const) {
    it(`produce an environment the agent's own config loader accepts (${what})`, () => {
      const env = Object.fromEntries([...agentEnv(values)].map(([k, v]) => [k, expand(v)]));
      const config = resolveAgentConfig({}, env);
      for (const o of agentOptions) {
        if (env[o.env]) assert.equal(config.sources[o.name], 'env', `${o.name} not taken from env`);
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Every value changes the output

/** A changed (schema-valid) value for every leaf of values.yaml. */
const MUTATIONS: Record<string, unknown> = {
  'image.repository': 'registry.example/ferry',
  'image.tag': '9.9.9',
  'image.digest': `sha256:${'a'.repeat(64)}`,
  'image.pullPolicy': 'Always',
  imagePullSecrets: [{ name: 'regcred' }],
  nameOverride: 'fy',
  fullnameOverride: 'fy-all',
  commonLabels: { team: 'infra' },
  podAnnotations: { 'example.com/a': 'b' },
  'serviceAccount.create': false,
  'serviceAccount.name': 'sa-x',
  'serviceAccount.annotations': { 'example.com/a': 'b' },
  clusterDomain: 'example.local',
  'service.registry.port': 30020,
  'service.router.port': 30021,
  'service.metrics.port': 9191,
  'service.status.port': 9192,
  'service.metrics.annotations': { 'example.com/a': 'b' },
  'service.bootstrap.annotations': { 'example.com/a': 'b' },
  'ferry.advertiseHost': '$(POD_IP)',
  'ferry.localClients': ['10.0.0.5'],
  'ferry.containerdSock': '/run/k3s/containerd/containerd.sock',
  'ferry.containerdNamespace': 'other',
  'ferry.containerdContentPath': '',
  'ferry.containerdConfigPath': '/etc/cri/conf.d/hosts',
  'ferry.dataDir': '',
  'ferry.bootstrapPeers': ['10.0.0.1:5001'],
  'ferry.bootstrapDns': ['peers.example:5001'],
  'ferry.mirroredRegistries': ['https://docker.io'],
  'ferry.registryFilters': [':latest$'],
  'ferry.resolveTags': false,
  'ferry.tagPolicy': [':latest$=upstream'],
  'ferry.defaultTagMode': 'cluster',
  'ferry.upstreamTimeout': '3s',
  'ferry.networkKeySecret': 'cluster-key',
  'ferry.upstreamCredentialsSecret': 'regcred',
  'ferry.mirrorResolveTimeout': '50ms',
  'ferry.mirrorResolveRetries': 5,
  'ferry.resyncInterval': '5m',
  'ferry.shutdownTimeout': '20s',
  'ferry.firstPull': false,
  'ferry.spoolMaxBytes': '500Mi',
  'ferry.logLevel': 'debug',
  'ferry.containerdMirrorAdd': false,
  'ferry.additionalMirrorTargets': ['http://10.0.0.9:5000'],
  'ferry.prependExisting': true,
  'ferry.dialTimeout': '1s',
  'pinner.enabled': false,
  'pinner.port': 9443,
  'pinner.resolveTags.enabled': false,
  'pinner.budget': '1s',
  'pinner.freshFor': '30s',
  'pinner.include': ['^docker.io/'],
  'pinner.exclude': ['^registry.k8s.io/'],
  'pinner.webhook.namespaceLabel': 'example.com/pin',
  'pinner.webhook.timeoutSeconds': 3,
  'pinner.webhook.reinvocationPolicy': 'Never',
  'pinner.tls.source': 'chart',
  'pinner.tls.validityDays': 365,
  nodeOptions: '--max-semi-space-size=4',
  'resources.requests.cpu': '100m',
  'resources.requests.memory': '256Mi',
  'resources.limits.memory': '1Gi',
  priorityClassName: 'other',
  nodeSelector: { 'kubernetes.io/os': 'linux', pool: 'a' },
  tolerations: [{ key: 'x', operator: 'Exists', effect: 'NoSchedule' }],
  affinity: { nodeAffinity: {} },
  'updateStrategy.type': 'OnDelete',
  'updateStrategy.rollingUpdate.maxUnavailable': 1,
  terminationGracePeriodSeconds: 60,
  'readinessProbe.periodSeconds': 10,
  'readinessProbe.failureThreshold': 5,
  'livenessProbe.initialDelaySeconds': 20,
  'livenessProbe.periodSeconds': 20,
  'livenessProbe.failureThreshold': 3,
  'serviceMonitor.enabled': false,
  'serviceMonitor.interval': '30s',
  'serviceMonitor.scrapeTimeout': '10s',
  'serviceMonitor.labels': { release: 'prom' },
  'networkPolicy.enabled': false,
  'networkPolicy.nodeCidrs': ['10.0.0.0/16'],
  'grafanaDashboard.enabled': false,
  'grafanaDashboard.labels': { grafana_dashboard: '1', team: 'infra' },
  'grafanaDashboard.annotations': { 'example.com/folder': 'ferry' },
  'cleanup.enabled': false,
  'cleanup.timeoutSeconds': 600,
};

/** Leaves of values.yaml: where the schema stops describing properties (typed maps, lists, scalars). */
function leaves(values: unknown, node: Obj, prefix: string): string[] {
  const props = node.properties as Record<string, Obj> | undefined;
  if (!props || typeof values !== 'object' || values === null || Array.isArray(values)) return [prefix];
  return Object.entries(values as Obj).flatMap(([k, v]) =>
    leaves(v, props[k] ?? {}, prefix ? `${prefix}.${k}` : k),
  );
}

describe('every value', () => {
  const paths = leaves(chart.values, schema, '');
  it('has a mutation in this test', () => {
    assert.deepEqual(paths.sort(), Object.keys(MUTATIONS).sort());
  });
  // The generated network key differs in every render: masked, so a value that maps to nothing shows.
  const text = (out: Map<string, string>) =>
    [...out.values()].join('\n---\n').replace(/network\.key: \S+/g, 'network.key: <generated>');
  const base = text(renderChart({ values: everythingOn, apiVersions: withCertManager }));
  for (const p of paths) {
    it(`${p} changes the rendered output`, () => {
      const values = mergeDeep(everythingOn, override(p, MUTATIONS[p])) as Obj;
      assert.ok(
        validateValues(mergeDeep(chart.values, values)),
        `${p}: ${JSON.stringify(validateValues.errors)}`,
      );
      const out = renderChart({ values, apiVersions: withCertManager });
      assert.notEqual(text(out), base, `${p} maps to nothing`);
      for (const o of parseRendered(out)) validateObject(o);
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// ferry configure: the init container's and the cleanup's arguments, run for real

function configureArgs(values: Obj, hostsDir: string, which: 'configure' | 'cleanup'): string[] {
  const objs = render({ values });
  const ds = find(objs, 'DaemonSet', which === 'configure' ? 'ferry' : 'ferry-cleanup');
  const c = container(ds, which);
  return (c.args ?? []).map((a) => expand(a.startsWith('--hosts-dir=') ? `--hosts-dir=${hostsDir}` : a));
}

describe('ferry configure in the chart', () => {
  it('uses every configure flag', () => {
    const configure = buildProgram().commands.find((c) => c.name() === 'configure')!;
    const used = new Set<string>();
    for (const values of [
      {},
      override('ferry.resolveTags', false),
      mergeDeep(
        override('ferry.mirroredRegistries', ['https://docker.io']),
        override('ferry.prependExisting', true),
      ),
    ] as Obj[]) {
      for (const which of ['configure', 'cleanup'] as const) {
        for (const a of configureArgs(values, '/x', which)) used.add(a.split('=')[0]!);
      }
    }
    for (const o of configure.options) assert.ok(used.has(o.long!), `${o.long} is never set by the chart`);
  });

  it('writes hosts.toml pointing at the node-IP hostPort, then restores the original on cleanup', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-chart-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'original.txt'), 'kept');
    const io = { env: {}, stdout: () => {}, stderr: (s: string) => assert.fail(s) };
    const values = mergeDeep(
      override('ferry.mirroredRegistries', ['https://docker.io', 'ghcr.io']),
      mergeDeep(
        override('ferry.resolveTags', false),
        override('ferry.additionalMirrorTargets', ['http://10.0.0.9:5000']),
      ),
    ) as Obj;
    assert.equal(await ferryMain(configureArgs(values, dir, 'configure'), io), 0);
    const docker = await readFile(join(dir, 'docker.io', 'hosts.toml'), 'utf8');
    assert.match(docker, /http:\/\/127\.0\.0\.1:5000/);
    assert.match(docker, /http:\/\/10\.0\.0\.9:5000/);
    assert.ok(docker.indexOf('127.0.0.1:5000') < docker.indexOf('10.0.0.9:5000'), 'own node first');
    assert.doesNotMatch(docker, /resolve/);
    assert.match(await readFile(join(dir, 'ghcr.io', 'hosts.toml'), 'utf8'), /127\.0\.0\.1:5000/);
    assert.equal(await ferryMain(configureArgs(values, dir, 'cleanup'), io), 0);
    assert.equal(await readFile(join(dir, 'original.txt'), 'utf8'), 'kept');
    await assert.rejects(readFile(join(dir, 'docker.io', 'hosts.toml')));
  });
});

// ---------------------------------------------------------------------------------------------------
// The properties the design asks for

describe('agent DaemonSet', () => {
  const objs = render({ values: everythingOn, apiVersions: withCertManager });
  const ds = find(objs, 'DaemonSet', 'ferry');
  const spec = podSpec(ds);
  const agent = container(ds, 'agent');

  it('runs on every node with system-node-critical priority', () => {
    assert.equal(spec.priorityClassName, 'system-node-critical');
    assert.deepEqual(spec.tolerations, [{ operator: 'Exists' }]);
  });

  it('probes /readyz for readiness and /healthz for liveness on the metrics port', () => {
    assert.deepEqual(agent.readinessProbe?.httpGet, { path: '/readyz', port: 'metrics' });
    assert.deepEqual(agent.livenessProbe?.httpGet, { path: '/healthz', port: 'metrics' });
    assert.ok(agent.ports?.some((p) => p.name === 'metrics' && p.containerPort === 9090));
  });

  it('exposes the registry as a hostPort that the mirror target names, and advertises the node IP', () => {
    const reg = agent.ports?.find((p) => p.name === 'registry');
    assert.equal(reg?.hostPort, reg?.containerPort);
    const configure = container(ds, 'configure');
    assert.ok(configure.args?.includes(`--mirror-targets=http://$(NODE_IP):${reg?.hostPort}`));
    assert.equal(envOf(agent).get('FERRY_ADVERTISE_HOST'), '$(NODE_IP)');
    const nodeIp = agent.env?.find((e) => e.name === 'NODE_IP');
    assert.deepEqual(nodeIp?.valueFrom, { fieldRef: { fieldPath: 'status.hostIP' } });
  });

  it('mounts the containerd socket directory and the content directory read-only, the data dir read-write', () => {
    const mounts = new Map(agent.volumeMounts?.map((m) => [m.mountPath, m]));
    assert.equal(mounts.get('/run/containerd')?.readOnly, true);
    assert.equal(mounts.get('/var/lib/containerd/io.containerd.content.v1.content')?.readOnly, true);
    assert.equal(mounts.get('/var/lib/ferry')?.readOnly, undefined);
    const configure = container(ds, 'configure');
    assert.deepEqual(configure.volumeMounts, [
      { name: 'containerd-config', mountPath: '/etc/containerd/certs.d' },
    ]);
  });

  it('gives every container a read-only root filesystem, no capabilities and no privilege escalation', () => {
    for (const o of objs) {
      const tpl = (
        o.obj.spec as { template?: { spec: { containers: Obj[]; initContainers?: Obj[] } } } | undefined
      )?.template;
      if (!tpl) continue;
      for (const c of [...tpl.spec.containers, ...(tpl.spec.initContainers ?? [])]) {
        const sc = c.securityContext as Obj;
        assert.equal(sc.readOnlyRootFilesystem, true, `${c.name}`);
        assert.equal(sc.allowPrivilegeEscalation, false, `${c.name}`);
        assert.deepEqual(sc.capabilities, { drop: ['ALL'] }, `${c.name}`);
        // Root only where a hostPath or the containerd socket needs it.
        const needsHost = ['agent', 'configure', 'cleanup'].includes(String(c.name));
        assert.equal(sc.runAsNonRoot, !needsHost, `${c.name}`);
      }
    }
  });

  it('bootstraps from the headless Service, which publishes not-ready pods', () => {
    const svc = find(objs, 'Service', 'ferry-headless');
    assert.equal((svc.spec as Obj).clusterIP, 'None');
    assert.equal((svc.spec as Obj).publishNotReadyAddresses, true);
    assert.equal(envOf(agent).get('FERRY_BOOTSTRAP_DNS'), 'ferry-headless.ferry.svc.cluster.local:5001');
  });

  it('limits the router port to Ferry pods with the NetworkPolicy', () => {
    const np = find(objs, 'NetworkPolicy', 'ferry');
    const rules = (np.spec as { ingress: { from?: Obj[]; ports: { port: number }[] }[] }).ingress;
    const router = rules.find((r) => r.ports.some((p) => p.port === 5001))!;
    assert.equal(router.ports.length, 1);
    assert.deepEqual(router.from, [
      {
        podSelector: {
          matchLabels: { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/instance': 'ferry' },
        },
      },
    ]);
  });
});

describe('pinner webhook', () => {
  type Webhook = {
    failurePolicy: string;
    sideEffects: string;
    timeoutSeconds: number;
    reinvocationPolicy: string;
    rules: { resources: string[]; apiGroups: string[] }[];
    namespaceSelector: { matchExpressions: { key: string; operator: string; values: string[] }[] };
    clientConfig: { caBundle?: string; service: { name: string; namespace: string; path: string } };
  };
  const webhookOf = (objs: ReturnType<typeof render>) => {
    const mwc = find(objs, 'MutatingWebhookConfiguration', 'ferry-pinner');
    return { mwc, hook: (mwc.webhooks as Webhook[])[0]! };
  };

  it('mutates pods only, never blocks them, and is opt-in per namespace, never Ferry’s own', () => {
    const { hook } = webhookOf(render({ values: everythingOn }));
    assert.equal(hook.failurePolicy, 'Ignore');
    assert.equal(hook.sideEffects, 'None');
    assert.equal(hook.reinvocationPolicy, 'IfNeeded');
    assert.ok(hook.timeoutSeconds >= 1 && hook.timeoutSeconds <= 10);
    assert.deepEqual(
      hook.rules.map((r) => [r.apiGroups, r.resources]),
      [[[''], ['pods', 'pods/ephemeralcontainers']]],
    );
    assert.deepEqual(hook.namespaceSelector.matchExpressions, [
      { key: 'ferry.dev/pin', operator: 'In', values: ['enabled'] },
      { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['ferry'] },
    ]);
    assert.deepEqual(hook.clientConfig.service, {
      name: 'ferry-pinner',
      namespace: 'ferry',
      path: '/mutate',
      port: 443,
    });
  });

  it('uses cert-manager when present: a Certificate for the Service and CA injection', () => {
    const objs = render({ values: everythingOn, apiVersions: withCertManager });
    const { mwc, hook } = webhookOf(objs);
    assert.equal(hook.clientConfig.caBundle, undefined);
    assert.equal(
      (mwc.metadata as { annotations: Obj }).annotations['cert-manager.io/inject-ca-from'],
      'ferry/ferry-pinner',
    );
    const cert = find(objs, 'Certificate', 'ferry-pinner');
    assert.deepEqual((cert.spec as Obj).dnsNames, [
      'ferry-pinner.ferry.svc',
      'ferry-pinner.ferry.svc.cluster.local',
    ]);
    assert.equal((cert.spec as Obj).secretName, 'ferry-pinner-tls');
    // With cert-manager the chart renders no TLS Secret (the network key is its only Secret).
    assert.deepEqual(
      objs.filter((o) => o.obj.kind === 'Secret').map((o) => (o.obj.metadata as Obj).name),
      ['ferry-network-key'],
    );
    const vol = podSpec(find(objs, 'DaemonSet', 'ferry')).volumes?.find((v) => v.name === 'pinner-tls');
    assert.equal(vol?.secret?.secretName, 'ferry-pinner-tls');
  });

  it('generates a CA and certificate without cert-manager, with the CA as caBundle', () => {
    const objs = render({ values: everythingOn });
    const { hook } = webhookOf(objs);
    const secret = find(objs, 'Secret', 'ferry-pinner-tls');
    const data = secret.data as Record<string, string>;
    assert.equal(secret.type, 'kubernetes.io/tls');
    assert.equal(hook.clientConfig.caBundle, data['ca.crt']);
    assert.match(Buffer.from(data['ca.crt']!, 'base64').toString(), /BEGIN CERTIFICATE/);
    assert.match(Buffer.from(data['tls.crt']!, 'base64').toString(), /BEGIN CERTIFICATE/);
    assert.match(Buffer.from(data['tls.key']!, 'base64').toString(), /PRIVATE KEY/);
    assert.ok(!objs.some((o) => o.obj.kind === 'Certificate'));
  });
});

describe('cleanup hook', () => {
  it('runs `ferry configure --cleanup` on every node and waits for it after helm uninstall', () => {
    const objs = render();
    const hooks = objs.filter((o) => (o.obj.metadata as { annotations?: Obj }).annotations?.['helm.sh/hook']);
    assert.deepEqual(
      hooks.map((o) => [o.obj.kind, (o.obj.metadata as { annotations: Obj }).annotations['helm.sh/hook']]),
      [
        ['ServiceAccount', 'post-delete'],
        ['Role', 'post-delete'],
        ['RoleBinding', 'post-delete'],
        ['DaemonSet', 'post-delete'],
        ['Job', 'post-delete'],
      ],
    );
    const ds = find(objs, 'DaemonSet', 'ferry-cleanup');
    const agentDs = find(objs, 'DaemonSet', 'ferry');
    assert.deepEqual(podSpec(ds).tolerations, podSpec(agentDs).tolerations);
    const job = find(objs, 'Job', 'ferry-cleanup-wait');
    const weight = (o: Obj) =>
      Number((o.metadata as { annotations: Obj }).annotations['helm.sh/hook-weight']);
    assert.ok(weight(job) > weight(ds), 'the waiter is created after the DaemonSet');
    const wait = (job.spec as { template: { spec: PodSpec2 } }).template.spec.containers[0]!;
    assert.ok(wait.args.includes('--daemonset=ferry-cleanup'));
    const role = find(objs, 'Role', 'ferry-cleanup');
    assert.deepEqual(role.rules, [
      { apiGroups: ['apps'], resources: ['daemonsets'], resourceNames: ['ferry-cleanup'], verbs: ['get'] },
    ]);
  });
});
type PodSpec2 = { containers: { args: string[] }[] };

describe('Grafana dashboard', () => {
  it('queries only metrics the agent exports (or the pinner’s announced ones)', async () => {
    const { createMetrics } = await import('../../packages/agent/src/metrics.ts');
    const names = new Set<string>();
    for (const m of await createMetrics({ defaultMetrics: false }).registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram')
        for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    }
    for (const n of ['ferry_pinner_resolutions_total', 'ferry_pinner_admission_duration_seconds_bucket'])
      names.add(n);
    const dash = JSON.parse(await readFile(join(chartDir, 'files', 'dashboard.json'), 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const titles = dash.panels.map((p) => p.title);
    for (const t of [
      'Mirror hit ratio',
      'Bytes from peers vs upstream',
      'Resolve latency',
      'Advertised keys',
      'Pinner sources',
    ]) {
      assert.ok(
        titles.some((x) => x.startsWith(t)),
        `no panel ${t}`,
      );
    }
    for (const p of dash.panels) {
      for (const t of p.targets) {
        for (const m of t.expr.matchAll(/\bferry_[a-z_]+/g))
          assert.ok(names.has(m[0]), `${p.title}: unknown metric ${m[0]}`);
      }
    }
    const cm = find(render({ values: everythingOn }), 'ConfigMap', 'ferry-dashboard');
    assert.deepEqual(JSON.parse((cm.data as Obj)['ferry.json'] as string), dash);
  });
});
