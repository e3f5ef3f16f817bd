/**
 * What `helm upgrade` sees of a cluster, for the chart's `lookup`: a stand-in Kubernetes API server on
 * loopback that answers discovery for the kinds the chart renders and GETs of the Secrets it holds (the
 * objects of an earlier install, owned by the release as Helm marks them); everything else is 404.
 * Real Helm renders against it with `helm template --dry-run=server`, which runs `lookup` for real.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chartDir, helmBin, splitHelmOutput } from './helm.ts';

/** Secrets by namespace, then name: key → text. */
export type Secrets = Record<string, Record<string, Record<string, string>>>;

const KINDS: Record<string, string[]> = {
  v1: ['Secret', 'Service', 'ServiceAccount', 'ConfigMap'],
  'apps/v1': ['DaemonSet'],
  'batch/v1': ['Job'],
  'rbac.authorization.k8s.io/v1': ['Role', 'RoleBinding'],
};

function resources(gv: string) {
  return {
    kind: 'APIResourceList',
    groupVersion: gv,
    resources: (KINDS[gv] ?? []).map((k) => ({
      name: `${k.toLowerCase()}s`,
      singularName: k.toLowerCase(),
      namespaced: true,
      kind: k,
      verbs: ['get', 'list', 'create', 'update'],
    })),
  };
}

export interface ApiServer {
  kubeconfig: string;
  /** Paths of every request, in order. */
  asked: string[];
  close(): Promise<void>;
}

export async function startApiServer(secrets: Secrets, release = 'ferry'): Promise<ApiServer> {
  const asked: string[] = [];
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    asked.push(path);
    const json = (o: unknown, code = 200) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(o));
    };
    if (path === '/version') return json({ major: '1', minor: '31', gitVersion: 'v1.31.0' });
    if (path === '/api') return json({ kind: 'APIVersions', versions: ['v1'] });
    if (path === '/apis') {
      const groups = Object.keys(KINDS)
        .filter((gv) => gv.includes('/'))
        .map((gv) => {
          const version = { groupVersion: gv, version: gv.split('/')[1] };
          return { name: gv.split('/')[0], versions: [version], preferredVersion: version };
        });
      return json({ kind: 'APIGroupList', apiVersion: 'v1', groups });
    }
    if (path === '/api/v1') return json(resources('v1'));
    const group = /^\/apis\/(.+)$/.exec(path)?.[1];
    if (group && KINDS[group]) return json(resources(group));
    const secret = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(path);
    const data = secret ? secrets[secret[1]!]?.[secret[2]!] : undefined;
    if (secret && data) {
      return json({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name: secret[2],
          namespace: secret[1],
          labels: { 'app.kubernetes.io/managed-by': 'Helm' },
          annotations: { 'meta.helm.sh/release-name': release, 'meta.helm.sh/release-namespace': secret[1] },
        },
        type: 'Opaque',
        data: Object.fromEntries(
          Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
        ),
      });
    }
    json({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 }, 404);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const dir = mkdtempSync(join(tmpdir(), 'ferry-kube-'));
  const kubeconfig = join(dir, 'config');
  writeFileSync(
    kubeconfig,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:${port}"}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`,
  );
  return {
    kubeconfig,
    asked,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Real Helm's render as an upgrade sees it (lookup answered by the cluster at `kubeconfig`). */
export async function helmUpgradeRender(
  kubeconfig: string,
  namespace = 'ferry',
): Promise<Map<string, string>> {
  const { stdout } = await promisify(execFile)(
    helmBin,
    [
      'template',
      'ferry',
      chartDir,
      '--namespace',
      namespace,
      '--dry-run=server',
      '--disable-openapi-validation',
    ],
    { env: { ...process.env, KUBECONFIG: kubeconfig }, maxBuffer: 64 << 20 },
  );
  return splitHelmOutput(stdout);
}
