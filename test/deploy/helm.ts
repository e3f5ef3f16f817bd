/**
 * Real Helm for the deploy checks: `helm template` and `helm lint` of deploy/charts/ferry with the
 * helm binary that scripts/bootstrap.sh unpacks into tools/bin (pinned in tools/package.json), and the
 * plain manifests in deploy/manifests/ generated from the default render (scripts/manifests.sh).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Document, parseAllDocuments, parseDocument } from 'yaml';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const chartDir = `${repoRoot}deploy/charts/ferry`;
export const manifestsDir = `${repoRoot}deploy/manifests`;
/** The pinned helm; FERRY_HELM overrides it. */
export const helmBin = process.env.FERRY_HELM ?? `${repoRoot}tools/bin/helm`;

export interface Chart {
  values: Record<string, unknown>;
  /** Template sources by path relative to the chart ('templates/daemonset.yaml'). */
  templates: Map<string, string>;
}

export function loadChart(dir: string): Chart {
  const values = (parseDocument(readFileSync(join(dir, 'values.yaml'), 'utf8')).toJS() ?? {}) as Record<
    string,
    unknown
  >;
  const templates = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else templates.set(relative(dir, p), readFileSync(p, 'utf8'));
    }
  };
  walk(join(dir, 'templates'));
  return { values, templates };
}

export interface RenderOptions {
  /** Values merged over values.yaml (Helm's merge: a null deletes a key). */
  values?: Record<string, unknown>;
  releaseName?: string;
  namespace?: string;
  /** API versions the cluster serves besides Helm's built-in ones (.Capabilities.APIVersions.Has). */
  apiVersions?: string[];
}

/** Runs helm with the arguments; stdin is given to `-f -`. Throws with helm's own message. */
export function helm(args: string[], stdin = ''): string {
  try {
    return execFileSync(helmBin, args, {
      input: stdin,
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`helm ${args.join(' ')}: ${e.stderr || e.stdout || e.message}`);
  }
}

/** `helm template`: the rendered text of every template, hooks included (source path → text). */
export function renderChart(opts: RenderOptions = {}): Map<string, string> {
  const args = ['template', opts.releaseName ?? 'ferry', chartDir, '--namespace', opts.namespace ?? 'ferry'];
  for (const v of opts.apiVersions ?? []) args.push('--api-versions', v);
  args.push('-f', '-');
  return splitHelmOutput(helm(args, JSON.stringify(opts.values ?? {})));
}

/** `helm template`'s output split by template (source path → text). */
export function splitHelmOutput(out: string): Map<string, string> {
  const docs = new Map<string, string>();
  for (const doc of out.split(/^---$/m)) {
    const m = /^# Source: ferry\/(\S+)$/m.exec(doc);
    if (!m) {
      if (doc.trim()) throw new Error(`helm output without a source line:\n${doc}`);
      continue;
    }
    const body = doc.replace(`${m[0]}\n`, '').replace(/^\n+/, '');
    docs.set(m[1]!, `${docs.get(m[1]!) ?? ''}---\n${body}`);
  }
  return docs;
}

export interface RenderedObject {
  source: string;
  obj: Record<string, unknown>;
}

/** Splits rendered templates into YAML documents; throws on any YAML error. Empty documents are dropped. */
export function parseRendered(rendered: Map<string, string>): RenderedObject[] {
  const objs: RenderedObject[] = [];
  for (const [source, text] of rendered) objs.push(...parseManifestText(text, source));
  return objs;
}

/** Parses a multi-document YAML text into objects; throws naming `source` on any YAML error. */
export function parseManifestText(text: string, source: string): RenderedObject[] {
  const objs: RenderedObject[] = [];
  for (const doc of parseAllDocuments(text, { uniqueKeys: true })) {
    if (doc.errors.length > 0) {
      throw new Error(`${source}: ${doc.errors.map((e) => e.message).join('; ')}\n--- rendered:\n${text}`);
    }
    const obj = doc.toJS() as unknown;
    if (obj === null || obj === undefined) continue;
    if (typeof obj !== 'object' || Array.isArray(obj))
      throw new Error(`${source}: a document is not a mapping`);
    objs.push({ source, obj: obj as Record<string, unknown> });
  }
  return objs;
}

// ---------------------------------------------------------------------------------------------------
// deploy/manifests/: the default render without Helm's own labels and hook annotations

/**
 * The values deploy/manifests/ is rendered with: the chart's defaults, but the network key Secret is
 * one the operator creates (a generated key in a file everyone downloads would be no secret).
 */
export const MANIFEST_VALUES = { ferry: { networkKeySecret: 'ferry-network-key' } };

const FERRY_HEADER = `# Ferry for the chart's default values, without Helm (namespace ferry, release name ferry).
# First create the cluster's network key, a Secret this file does not contain (only agents holding the
# key join the DHT; without the Secret the agent pods do not start, and their events say so):
#   kubectl create namespace ferry
#   kubectl -n ferry create secret generic ferry-network-key \\
#     --from-literal=network.key="$(openssl rand -hex 32)"
#   kubectl apply -f ferry.yaml
# Uninstall: see ../README.md ("Uninstall"): run cleanup.yaml before deleting this file's objects.
# Generated from the chart by scripts/manifests.sh (real helm); test/deploy/manifests.test.ts checks it.
`;
const CLEANUP_HEADER = `# Restores containerd's original hosts.toml on every node after Ferry (ferry.yaml) is removed:
#   kubectl -n ferry delete daemonset ferry
#   kubectl apply -f cleanup.yaml
#   kubectl -n ferry rollout status daemonset ferry-cleanup   # ready on every node = every node restored
#   kubectl delete -f cleanup.yaml -f ferry.yaml
# The same DaemonSet the chart runs as its post-delete hook (generated by scripts/manifests.sh).
`;

/** Drops what only Helm adds from one document: its labels and hook annotations. */
function withoutHelm(doc: Document): Document {
  doc.deleteIn(['metadata', 'labels', 'helm.sh/chart']);
  doc.deleteIn(['metadata', 'labels', 'app.kubernetes.io/managed-by']);
  const annotations = doc.getIn(['metadata', 'annotations']) as { items?: { key: unknown }[] } | undefined;
  for (const item of [...(annotations?.items ?? [])]) {
    const key = String((item.key as { value?: unknown }).value ?? item.key);
    if (key.startsWith('helm.sh/')) doc.deleteIn(['metadata', 'annotations', key]);
  }
  if (annotations?.items?.length === 0) doc.deleteIn(['metadata', 'annotations']);
  return doc;
}

/**
 * The text of deploy/manifests/ferry.yaml and cleanup.yaml: the chart's render for MANIFEST_VALUES
 * (release and namespace `ferry`) without Helm's labels; ferry.yaml adds the Namespace and leaves out the hooks,
 * cleanup.yaml is the post-delete DaemonSet.
 */
export function manifestTexts(): { 'ferry.yaml': string; 'cleanup.yaml': string } {
  const docs: Document[] = [];
  for (const text of renderChart({ values: MANIFEST_VALUES }).values()) {
    for (const d of parseAllDocuments(text, { uniqueKeys: true })) {
      if (d.errors.length > 0) throw new Error(d.errors.map((e) => e.message).join('; '));
      if (d.contents !== null) docs.push(d as Document);
    }
  }
  const isHook = (d: Document) => d.getIn(['metadata', 'annotations', 'helm.sh/hook']) !== undefined;
  const kindName = (d: Document) => `${d.get('kind')}/${d.getIn(['metadata', 'name'])}`;
  const show = (d: Document) =>
    withoutHelm(d)
      .toString({ lineWidth: 0, flowCollectionPadding: false })
      .replace(/^---\n/, '');
  const namespace = `apiVersion: v1
kind: Namespace
metadata:
  name: ferry
  labels:
    app.kubernetes.io/name: ferry
    app.kubernetes.io/instance: ferry
`;
  const main = docs.filter((d) => !isHook(d));
  const cleanup = docs.filter((d) => isHook(d) && kindName(d) === 'DaemonSet/ferry-cleanup');
  if (cleanup.length !== 1) throw new Error('the default render has no cleanup DaemonSet');
  return {
    'ferry.yaml': FERRY_HEADER + [namespace, ...main.map(show)].join('---\n'),
    'cleanup.yaml': CLEANUP_HEADER + cleanup.map(show).join('---\n'),
  };
}
