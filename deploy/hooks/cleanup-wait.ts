/**
 * The Helm chart's post-delete waiter: polls one DaemonSet through the Kubernetes API until its pods are
 * Ready on every node it is scheduled to (each pod turns Ready only after its init container ran
 * `ferry configure --cleanup` on its node), then exits 0. Exits 1 when the deadline passes first.
 *
 *   node cleanup-wait.ts --namespace=ferry --daemonset=ferry-cleanup [--timeout=300s] [--interval=2s]
 *
 * In a pod it uses the service account (token and CA under /var/run/secrets/kubernetes.io/serviceaccount,
 * API at KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT); it needs `get` on that one DaemonSet.
 * Only Node built-ins: it runs from the Ferry image with no dependencies.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseArgs } from 'node:util';

/** The fields of a DaemonSet this waiter reads. */
export interface DaemonSetState {
  metadata?: { generation?: number };
  status?: {
    observedGeneration?: number;
    desiredNumberScheduled?: number;
    numberReady?: number;
    updatedNumberScheduled?: number;
  };
}

/** Whether every scheduled pod of the DaemonSet is Ready and the status is current. */
export function daemonSetDone(ds: DaemonSetState): boolean {
  const s = ds.status;
  if (!s || s.observedGeneration === undefined) return false;
  if (s.observedGeneration < (ds.metadata?.generation ?? 0)) return false;
  const desired = s.desiredNumberScheduled ?? 0;
  return (s.numberReady ?? 0) >= desired && (s.updatedNumberScheduled ?? 0) >= desired;
}

export interface WaitOptions {
  /** API server base URL, e.g. https://10.96.0.1:443 (http:// for tests). */
  apiServer: string;
  namespace: string;
  daemonSet: string;
  /** Bearer token; undefined sends none. */
  token?: string;
  /** PEM of the API server's CA. */
  ca?: string;
  timeoutMs: number;
  intervalMs: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

function getJson(url: URL, token: string | undefined, ca: string | undefined, timeoutMs: number) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = request(
      url,
      {
        method: 'GET',
        headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        ...(ca ? { ca } : {}),
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Polls until the DaemonSet is done (resolves true) or the deadline passes (resolves false). */
export async function waitForDaemonSet(opts: WaitOptions): Promise<boolean> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const url = new URL(
    `/apis/apps/v1/namespaces/${encodeURIComponent(opts.namespace)}/daemonsets/${encodeURIComponent(opts.daemonSet)}`,
    opts.apiServer,
  );
  const deadline = Date.now() + opts.timeoutMs;
  let last = '';
  for (;;) {
    let line: string;
    try {
      const res = await getJson(url, opts.token, opts.ca, Math.max(1000, opts.intervalMs));
      if (res.status === 200) {
        const ds = JSON.parse(res.body) as DaemonSetState;
        if (daemonSetDone(ds)) {
          log(
            `${opts.namespace}/${opts.daemonSet}: ${ds.status?.numberReady ?? 0}/${ds.status?.desiredNumberScheduled ?? 0} nodes cleaned up`,
          );
          return true;
        }
        line = `${opts.namespace}/${opts.daemonSet}: ${ds.status?.numberReady ?? 0}/${ds.status?.desiredNumberScheduled ?? '?'} nodes ready`;
      } else {
        line = `${opts.namespace}/${opts.daemonSet}: API answered ${res.status}: ${res.body.slice(0, 200)}`;
      }
    } catch (err) {
      line = `${opts.namespace}/${opts.daemonSet}: ${(err as Error).message}`;
    }
    if (line !== last) log(line);
    last = line;
    const left = deadline - Date.now();
    if (left <= 0) {
      log(`gave up after ${opts.timeoutMs} ms: nodes without a ready cleanup pod keep Ferry's hosts.toml`);
      return false;
    }
    await new Promise((r) => setTimeout(r, Math.min(opts.intervalMs, left)));
  }
}

/** Parses `300s`, `5m`, `1500ms` or a number of seconds into milliseconds. */
export function parseSeconds(input: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(input.trim());
  if (!m) throw new Error(`expected a duration like 300s, got ${JSON.stringify(input)}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The command line; resolves to the exit code. */
export async function main(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  readFile: (p: string) => string = (p) => readFileSync(p, 'utf8'),
): Promise<number> {
  try {
    const { values } = parseArgs({
      args: [...argv],
      options: {
        namespace: { type: 'string' },
        daemonset: { type: 'string' },
        timeout: { type: 'string', default: '300s' },
        interval: { type: 'string', default: '2s' },
        'api-server': { type: 'string' },
      },
      strict: true,
    });
    if (!values.namespace || !values.daemonset) throw new Error('--namespace and --daemonset are required');
    let apiServer = values['api-server'];
    let token: string | undefined;
    let ca: string | undefined;
    if (!apiServer) {
      const host = env.KUBERNETES_SERVICE_HOST;
      if (!host) throw new Error('not in a pod (KUBERNETES_SERVICE_HOST unset) and no --api-server');
      const h = host.includes(':') ? `[${host}]` : host;
      apiServer = `https://${h}:${env.KUBERNETES_SERVICE_PORT ?? '443'}`;
      token = readFile(`${SA_DIR}/token`).trim();
      ca = readFile(`${SA_DIR}/ca.crt`);
    }
    const ok = await waitForDaemonSet({
      apiServer,
      namespace: values.namespace,
      daemonSet: values.daemonset,
      token,
      ca,
      timeoutMs: parseSeconds(values.timeout),
      intervalMs: parseSeconds(values.interval),
    });
    return ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`cleanup-wait: ${(err as Error).message}\n`);
    return 2;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2), process.env);
}
