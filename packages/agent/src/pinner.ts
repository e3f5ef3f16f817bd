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
import { type AgentConfig, agentSpecs, agentTable } from './config.ts';
import { formatAddress, type ListenAddress, upstreamEndpointsOf, urlOrEmptySchema } from './config-values.ts';
import { createLogger, type Logger } from './logger.ts';
import { defineOptions, IssueList, type OptionSpec, type OptionValues, spec } from './option-table.ts';

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
  const issues = new IssueList();
  for (const name of ['pinnerTlsCert', 'pinnerTlsKey'] as const) {
    if (config[name] === undefined)
      issues.add(
        agentTable.options.find((o) => o.name === name),
        'default',
        'required with --pinner (the webhook serves HTTPS)',
      );
  }
  issues.throwIfAny();
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

/** Reuses an agent option under another name: same schema, default, env var and description. */
function asAgent<N extends keyof typeof agentSpecs>(name: N, overrides: Partial<OptionSpec> = {}) {
  const env = agentTable.options.find((o) => o.name === name)!.env;
  return { ...agentSpecs[name], env, ...overrides } as (typeof agentSpecs)[N];
}

const pinnerSpecs = {
  addr: asAgent('pinnerAddr'),
  tlsCert: asAgent('pinnerTlsCert', { required: '(the webhook serves HTTPS)' }),
  tlsKey: asAgent('pinnerTlsKey', { required: '(the webhook serves HTTPS)' }),
  dataDir: asAgent('dataDir', {
    description:
      'Directory of the last-known database (`<dataDir>/pinner`). Default: in memory, lost on restart.',
  }),
  clusterUrl: spec({
    type: 'url',
    schema: urlOrEmptySchema,
    default: 'http://127.0.0.1:5000',
    env: 'FERRY_PINNER_CLUSTER_URL',
    description:
      "The node agent's registry, asked when the upstream and the database cannot answer; '' disables.",
  }),
  mirroredRegistries: asAgent('mirroredRegistries'),
  upstreamTimeout: asAgent('upstreamTimeout'),
  upstreamCredentials: asAgent('upstreamCredentials'),
  budget: asAgent('pinnerBudget'),
  freshFor: asAgent('pinnerFreshFor'),
  include: asAgent('pinnerInclude'),
  exclude: asAgent('pinnerExclude'),
  namespace: asAgent('pinnerNamespace'),
  logLevel: asAgent('logLevel'),
};

/** The `ferry pinner` options (the README embeds its Markdown). The environment variables are the agent's, so one env block fits both. */
export const pinnerCommandTable = defineOptions(pinnerSpecs);

/** The validated `ferry pinner` configuration. Durations in ms. */
export type PinnerCommandConfig = OptionValues<typeof pinnerSpecs> & {
  /** Derived from mirroredRegistries, as the agent's. */
  readonly upstreamEndpoints: Readonly<Record<string, string>>;
};

/** Resolves `ferry pinner` flags (commander's opts) and the environment. Throws ConfigError. */
export function resolvePinnerCommandConfig(
  flags: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
): PinnerCommandConfig {
  const r = pinnerCommandTable.resolve(flags, env);
  return Object.freeze({ ...r.values, upstreamEndpoints: upstreamEndpointsOf(r.raw.mirroredRegistries) });
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
  pinnerCommandTable.addTo(cmd);
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
    mirroredRegistries: config.mirroredRegistries,
    endpoints: { ...config.upstreamEndpoints },
    ...(credentials === undefined ? {} : { credentials }),
  });
  let running: RunningPinner;
  try {
    running = await startPinner({
      addr: config.addr,
      tlsCert: config.tlsCert as string,
      tlsKey: config.tlsKey as string,
      budgetMs: config.budget,
      freshForMs: config.freshFor,
      upstreamTimeoutMs: config.upstreamTimeout,
      include: [...config.include],
      exclude: [...config.exclude],
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
