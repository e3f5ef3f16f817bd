/**
 * Shared by the deploy checks: the chart on disk, its renders by real Helm, and validation of Kubernetes objects
 * against the schemas of kubernetes-models (and its cert-manager / prometheus-operator packages).
 */
import { Certificate, Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { MutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import {
  chartDir,
  loadChart,
  parseRendered,
  type RenderedObject,
  type RenderOptions,
  renderChart,
} from './helm.ts';

export { chartDir, manifestsDir, repoRoot } from './helm.ts';
export const chart = loadChart(chartDir);

/** Agent options the chart deliberately does not set, and why (chart.test.ts and manifests.test.ts). */
export const optionsNotInChart: Record<string, string> = {
  config: 'every option has its own value and env variable; the chart writes no config file',
};

/** Values that switch every optional part of the chart on. */
export const everythingOn = {
  pinner: { enabled: true },
  serviceMonitor: { enabled: true },
  networkPolicy: { enabled: true },
  grafanaDashboard: { enabled: true },
};

/** The API versions that make the chart use cert-manager (Helm knows the built-in ones). */
export const withCertManager = ['cert-manager.io/v1'];

/** Real `helm template` of the chart, parsed into objects. */
export function render(opts: RenderOptions = {}): RenderedObject[] {
  return parseRendered(renderChart(opts));
}

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: never) => Validatable;

const MODELS: Record<string, ModelClass> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/Service': Service,
  'v1/Secret': Secret,
  'v1/ConfigMap': ConfigMap,
  'apps/v1/DaemonSet': DaemonSet,
  'batch/v1/Job': Job,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': MutatingWebhookConfiguration,
  'cert-manager.io/v1/Issuer': Issuer,
  'cert-manager.io/v1/Certificate': Certificate,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

/** Validates one object against the schema of its kind; throws naming the object and the problem. */
export function validateObject(o: RenderedObject): void {
  const { apiVersion, kind, metadata } = o.obj as {
    apiVersion?: string;
    kind?: string;
    metadata?: { name?: string };
  };
  const id = `${o.source}: ${apiVersion}/${kind} ${metadata?.name}`;
  const Model = MODELS[`${apiVersion}/${kind}`];
  if (!Model) throw new Error(`${id}: no schema known for this kind`);
  if (!metadata?.name) throw new Error(`${id}: metadata.name missing`);
  try {
    new Model(o.obj as never).validate();
  } catch (err) {
    throw new Error(`${id}: ${(err as Error).message}`);
  }
}

export type Obj = Record<string, unknown>;

export function find(objs: RenderedObject[], kind: string, name: string): Obj {
  const o = objs.find(
    (x) => x.obj.kind === kind && (x.obj.metadata as { name?: string } | undefined)?.name === name,
  );
  if (!o)
    throw new Error(
      `no ${kind} ${name} in ${objs.map((x) => `${x.obj.kind}/${(x.obj.metadata as Obj).name}`)}`,
    );
  return o.obj;
}

export interface Container {
  name: string;
  image?: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  ports?: { name: string; containerPort: number; hostPort?: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  securityContext?: Obj;
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
}
export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; hostPath?: { path: string; type?: string }; secret?: { secretName: string } }[];
  priorityClassName?: string;
  tolerations?: Obj[];
}

export function podSpec(ds: Obj): PodSpec {
  return (ds.spec as { template: { spec: PodSpec } }).template.spec;
}

export function container(ds: Obj, name: string): Container {
  const spec = podSpec(ds);
  const c = [...spec.containers, ...(spec.initContainers ?? [])].find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** The container's env as name → value (valueFrom entries are left out). */
export function envOf(c: Container): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of c.env ?? []) if (e.value !== undefined) m.set(e.name, e.value);
  return m;
}
