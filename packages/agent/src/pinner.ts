/**
 * The pinner's wiring: inside `ferry agent --pinner` (sharing the agent's upstream client, last-known
 * database and metrics), and as its own process, `ferry pinner`. The logic lives in @ferry/pinner.
 */
import { join } from 'node:path';
import { createPinner, createPinnerServer, type Pinner, type PinnerServer } from '@ferry/pinner';
import {
  createMemoryLastKnownStore,
  createUpstreamClient,
  type DockerConfig,
  type LastKnownStore,
  loadDockerConfig,
  openLastKnownStore,
  type UpstreamClient,
} from '@ferry/resolver';
import type { Command } from 'commander';
import { Registry } from 'prom-client';
import {
  type AgentConfig,
  ConfigError,
  type ConfigIssue,
  formatAddress,
  type ListenAddress,
  LOG_LEVELS,
  type LogLevel,
  parseAddress,
  parseDuration,
  splitList,
  upstreamEndpointsOf,
} from './config.ts';
import { createLogger, type Logger } from './logger.ts';

/** A running pinner (logic + HTTPS server). */
export interface RunningPinner {
  readonly pinner: Pinner;
  readonly server: PinnerServer;
  /** The bound HTTPS address. */
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

function listenHost(addr: ListenAddress): string {
  return addr.host === '' ? '0.0.0.0' : addr.host;
}

/** The agent configuration fields the in-agent pinner reads. */
export type AgentPinnerConfig = Pick<
  AgentConfig,
  | 'pinner'
  | 'pinnerAddr'
  | 'pinnerTlsCert'
  | 'pinnerTlsKey'
  | 'pinnerBudget'
  | 'pinnerFreshFor'
  | 'pinnerInclude'
  | 'pinnerExclude'
  | 'pinnerNamespace'
  | 'upstreamTimeout'
>;

/** Throws ConfigError when --pinner is set without its certificate and key. */
export function checkAgentPinnerConfig(config: AgentPinnerConfig): void {
  if (!config.pinner) return;
  const issues: ConfigIssue[] = [];
  const lines: string[] = [];
  for (const [name, flag, env] of [
    ['pinnerTlsCert', '--pinner-tls-cert', 'FERRY_PINNER_TLS_CERT'],
    ['pinnerTlsKey', '--pinner-tls-key', 'FERRY_PINNER_TLS_KEY'],
  ] as const) {
    if (config[name] === undefined) {
      issues.push({ field: name, source: 'default', message: 'required with --pinner' });
      lines.push(
        `invalid config: ${name} (${flag} / ${env}): required with --pinner (the webhook serves HTTPS)`,
      );
    }
  }
  if (issues.length > 0) throw new ConfigError(issues, lines);
}

/** What the in-agent pinner shares with the agent. */
export interface AgentPinnerDeps {
  upstream: UpstreamClient;
  store: LastKnownStore;
  /** The agent's metrics registry: the pinner's metrics appear on the agent's /metrics too. */
  metricsRegistry: Registry;
  /** The agent's own registry (http://…:5000): the pinner's cluster step. */
  clusterUrl: string;
  logger: Logger;
}

/** Starts the pinner inside the agent (`--pinner`). */
export async function startAgentPinner(
  config: AgentPinnerConfig,
  deps: AgentPinnerDeps,
): Promise<RunningPinner> {
  checkAgentPinnerConfig(config);
  return startPinner({
    addr: config.pinnerAddr as ListenAddress,
    tlsCert: config.pinnerTlsCert as string,
    tlsKey: config.pinnerTlsKey as string,
    budgetMs: config.pinnerBudget,
    freshForMs: config.pinnerFreshFor,
    upstreamTimeoutMs: config.upstreamTimeout,
    include: [...config.pinnerInclude],
    exclude: [...config.pinnerExclude],
    ...(config.pinnerNamespace === undefined ? {} : { namespace: config.pinnerNamespace }),
    clusterUrl: deps.clusterUrl,
    upstream: deps.upstream,
    store: deps.store,
    metricsRegistry: deps.metricsRegistry,
    logger: deps.logger,
  });
}

interface StartPinnerOptions {
  addr: ListenAddress;
  tlsCert: string;
  tlsKey: string;
  budgetMs: number;
  freshForMs: number;
  upstreamTimeoutMs: number;
  include: string[];
  exclude: string[];
  namespace?: string;
  clusterUrl: string;
  upstream: UpstreamClient;
  store: LastKnownStore;
  metricsRegistry: Registry;
  logger: Logger;
}

async function startPinner(o: StartPinnerOptions): Promise<RunningPinner> {
  const pinner = createPinner({
    upstream: o.upstream,
    store: o.store,
    clusterUrl: o.clusterUrl,
    budgetMs: o.budgetMs,
    freshForMs: o.freshForMs,
    upstreamTimeoutMs: o.upstreamTimeoutMs,
    include: o.include,
    exclude: o.exclude,
    ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
    metricsRegistry: o.metricsRegistry,
    logger: o.logger,
  });
  let server: PinnerServer;
  try {
    server = await createPinnerServer({
      pinner,
      tlsCertFile: o.tlsCert,
      tlsKeyFile: o.tlsKey,
      logger: o.logger,
    });
  } catch (err) {
    await pinner.close();
    throw err;
  }
  const address = await server.listen({ host: listenHost(o.addr), port: o.addr.port }).catch(async (err) => {
    await server.close();
    await pinner.close();
    throw err;
  });
  o.logger.info(
    {
      addr: formatAddress(address),
      clusterUrl: o.clusterUrl,
      budgetMs: o.budgetMs,
      freshForMs: o.freshForMs,
    },
    'pinner listening',
  );
  return {
    pinner,
    server,
    address,
    async close() {
      await server.close();
      await pinner.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// `ferry pinner`: the pinner as its own process.

/** The validated `ferry pinner` configuration. Durations in ms. */
export interface PinnerCommandConfig {
  addr: ListenAddress;
  tlsCert: string;
  tlsKey: string;
  dataDir: string | undefined;
  clusterUrl: string;
  mirroredRegistries: string[];
  upstreamTimeout: number;
  upstreamCredentials: string | undefined;
  budget: number;
  freshFor: number;
  include: string[];
  exclude: string[];
  namespace: string | undefined;
  logLevel: LogLevel;
}

/** One `ferry pinner` option: flag, environment variable, default, help. */
interface PinnerFlag {
  name: keyof PinnerCommandConfig;
  flag: string;
  env: string;
  default?: string;
  list?: boolean;
  help: string;
}

/** The `ferry pinner` options. The environment variables are the agent's, so one env block fits both. */
export const pinnerCommandOptions: readonly PinnerFlag[] = Object.freeze([
  {
    name: 'addr',
    flag: '--addr',
    env: 'FERRY_PINNER_ADDR',
    default: ':8443',
    help: 'HTTPS listen address (POST /mutate, /healthz, /metrics).',
  },
  {
    name: 'tlsCert',
    flag: '--tls-cert',
    env: 'FERRY_PINNER_TLS_CERT',
    help: 'Serving certificate (PEM); re-read when the file changes. Required.',
  },
  {
    name: 'tlsKey',
    flag: '--tls-key',
    env: 'FERRY_PINNER_TLS_KEY',
    help: 'Private key (PEM); re-read when the file changes. Required.',
  },
  {
    name: 'dataDir',
    flag: '--data-dir',
    env: 'FERRY_DATA_DIR',
    help: 'Directory of the last-known database (<dataDir>/pinner). Default: in memory, lost on restart.',
  },
  {
    name: 'clusterUrl',
    flag: '--cluster-url',
    env: 'FERRY_PINNER_CLUSTER_URL',
    default: 'http://127.0.0.1:5000',
    help: "The node agent's registry, asked when the upstream and the database cannot answer; '' disables.",
  },
  {
    name: 'mirroredRegistries',
    flag: '--mirrored-registries',
    env: 'FERRY_MIRRORED_REGISTRIES',
    list: true,
    help: 'Registry URLs; http:// ones are asked over plain HTTP (as the agent option).',
  },
  {
    name: 'upstreamTimeout',
    flag: '--upstream-timeout',
    env: 'FERRY_UPSTREAM_TIMEOUT',
    default: '1s',
    help: 'Longest wait for the upstream per image.',
  },
  {
    name: 'upstreamCredentials',
    flag: '--upstream-credentials',
    env: 'FERRY_UPSTREAM_CREDENTIALS',
    help: 'Docker config.json with upstream credentials.',
  },
  {
    name: 'budget',
    flag: '--budget',
    env: 'FERRY_PINNER_BUDGET',
    default: '2s',
    help: "Total time to resolve one pod's images; below the webhook's timeoutSeconds.",
  },
  {
    name: 'freshFor',
    flag: '--fresh-for',
    env: 'FERRY_PINNER_FRESH_FOR',
    default: '10s',
    help: 'Reuse an upstream answer this young without asking again; 0 disables.',
  },
  {
    name: 'include',
    flag: '--include',
    env: 'FERRY_PINNER_INCLUDE',
    list: true,
    help: 'Regexes over <registry>/<repo>:<tag>: only these are pinned; empty: all.',
  },
  {
    name: 'exclude',
    flag: '--exclude',
    env: 'FERRY_PINNER_EXCLUDE',
    list: true,
    help: 'Regexes over <registry>/<repo>:<tag>: never pinned.',
  },
  {
    name: 'namespace',
    flag: '--namespace',
    env: 'FERRY_PINNER_NAMESPACE',
    help: "Ferry's own namespace, never pinned. Default: $POD_NAMESPACE.",
  },
  {
    name: 'logLevel',
    flag: '--log-level',
    env: 'FERRY_LOG_LEVEL',
    default: 'info',
    help: `Log level: ${LOG_LEVELS.join(', ')}.`,
  },
]);

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Resolves `ferry pinner` flags (commander's opts) and the environment. Throws ConfigError. */
export function resolvePinnerCommandConfig(
  flags: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
): PinnerCommandConfig {
  const issues: ConfigIssue[] = [];
  const lines: string[] = [];
  const out: Record<string, unknown> = {};
  for (const o of pinnerCommandOptions) {
    const f = flags[o.name];
    const fromFlag = f !== undefined;
    let raw: string | undefined = fromFlag
      ? Array.isArray(f)
        ? f.join(',')
        : String(f)
      : env[o.env] !== undefined && env[o.env] !== ''
        ? env[o.env]
        : undefined;
    if (raw === undefined && o.name === 'namespace' && env.POD_NAMESPACE) raw = env.POD_NAMESPACE;
    const value = raw ?? o.default;
    const where = fromFlag ? 'flag' : raw !== undefined ? 'env' : 'default';
    try {
      out[o.name] = parseValue(o, value);
    } catch (err) {
      issues.push({
        field: undefined,
        source: where === 'default' ? 'default' : where,
        message: (err as Error).message,
      });
      lines.push(
        `invalid config: ${o.flag} / ${o.env}: ${(err as Error).message}${where === 'default' ? '' : ` (from ${where})`}`,
      );
    }
  }
  if (issues.length > 0) throw new ConfigError(issues, lines);
  return out as unknown as PinnerCommandConfig;
}

function parseValue(o: PinnerFlag, value: string | undefined): unknown {
  switch (o.name) {
    case 'addr':
      return parseAddress(value ?? '');
    case 'tlsCert':
    case 'tlsKey':
      if (!value?.trim()) throw new Error('required (the webhook serves HTTPS)');
      return value.trim();
    case 'dataDir':
    case 'upstreamCredentials':
    case 'namespace':
      return value?.trim() || undefined;
    case 'clusterUrl': {
      const v = (value ?? '').trim();
      if (v === '') return '';
      const u = new URL(v); // throws "Invalid URL"
      if (u.protocol !== 'http:' && u.protocol !== 'https:')
        throw new Error(`expected an http(s) URL, got ${JSON.stringify(v)}`);
      return v.replace(/\/+$/, '');
    }
    case 'upstreamTimeout':
    case 'budget':
    case 'freshFor':
      return parseDuration(value ?? '');
    case 'mirroredRegistries':
      return value ? splitList(value) : [];
    case 'include':
    case 'exclude': {
      const list = value ? splitList(value) : [];
      for (const p of list) {
        try {
          new RegExp(p);
        } catch (err) {
          throw new Error(`invalid regular expression ${JSON.stringify(p)}: ${(err as Error).message}`);
        }
      }
      return list;
    }
    case 'logLevel': {
      const l = (value ?? '').trim().toLowerCase();
      if (!(LOG_LEVELS as readonly string[]).includes(l))
        throw new Error(`expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(value)}`);
      return l;
    }
  }
}

/** Registers `ferry pinner` on the program; `run` receives the validated config. */
export function addPinnerCommand(
  program: Command,
  env: Readonly<Record<string, string | undefined>>,
  run: (c: PinnerCommandConfig) => Promise<void>,
): Command {
  const cmd = program
    .command('pinner')
    .description('Run the pinner alone: the admission webhook that pins pod images to digests (HTTPS).');
  for (const o of pinnerCommandOptions) {
    const help = `${o.help} [env ${o.env}; default ${o.default ?? 'none'}]`;
    if (o.list) cmd.option(`${o.flag} <list>`, `${help} (comma-separated, repeatable)`, collect);
    else cmd.option(`${o.flag} <value>`, help);
  }
  cmd.action(async (_opts, c: Command) => run(resolvePinnerCommandConfig(c.opts(), env)));
  return cmd;
}

/** `ferry pinner`: runs until SIGTERM/SIGINT, then closes the server and the database. */
export async function runPinnerCommand(config: PinnerCommandConfig): Promise<void> {
  const logger = createLogger({ level: config.logLevel }).child({ component: 'pinner' });
  let credentials: DockerConfig | undefined;
  if (config.upstreamCredentials !== undefined)
    credentials = await loadDockerConfig(config.upstreamCredentials);
  let store: LastKnownStore;
  if (config.dataDir !== undefined) {
    store = await openLastKnownStore(join(config.dataDir, 'pinner'), { logger });
  } else {
    logger.warn('no --data-dir: last-known digests are kept in memory and will not survive a restart');
    store = createMemoryLastKnownStore();
  }
  const upstream = createUpstreamClient({
    timeoutMs: config.upstreamTimeout,
    endpoints: { ...upstreamEndpointsOf(config.mirroredRegistries) },
    ...(credentials === undefined ? {} : { credentials }),
  });
  let running: RunningPinner;
  try {
    running = await startPinner({
      addr: config.addr,
      tlsCert: config.tlsCert,
      tlsKey: config.tlsKey,
      budgetMs: config.budget,
      freshForMs: config.freshFor,
      upstreamTimeoutMs: config.upstreamTimeout,
      include: config.include,
      exclude: config.exclude,
      ...(config.namespace === undefined ? {} : { namespace: config.namespace }),
      clusterUrl: config.clusterUrl,
      upstream,
      store,
      metricsRegistry: new Registry(),
      logger,
    });
  } catch (err) {
    await upstream.close().catch(() => {});
    await store.close().catch(() => {});
    throw err;
  }
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'shutting down');
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await running.close();
  await upstream.close().catch(() => {});
  await store.close();
  logger.info('stopped');
}
