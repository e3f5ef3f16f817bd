/**
 * The pinner's wiring: inside `ferry agent --pinner` (sharing the agent's upstream client, last-known
 * database and metrics), and as its own process, `ferry pinner`. The logic lives in @ferry/pinner.
 */
import { createPinner, createPinnerServer, type Pinner, type PinnerServer } from '@ferry/pinner';
import type { LastKnownStore, UpstreamClient } from '@ferry/resolver';
import type { Command } from 'commander';
import { Registry } from 'prom-client';
import { type AgentConfig, agentSpecs, agentTable } from './config.ts';
import { formatAddress, type ListenAddress, upstreamEndpointsOf, urlOrEmptySchema } from './config-values.ts';
import { createLogger, type Logger } from './logger.ts';
import { defineOptions, IssueList, type OptionSpec, type OptionValues, spec } from './option-table.ts';
import { untilShutdownSignal } from './shutdown.ts';
import { openUpstreamDeps } from './upstream-deps.ts';

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
  return startPinner(
    {
      addr: config.pinnerAddr,
      tlsCert: config.pinnerTlsCert,
      tlsKey: config.pinnerTlsKey,
      budget: config.pinnerBudget,
      freshFor: config.pinnerFreshFor,
      upstreamTimeout: config.upstreamTimeout,
      include: config.pinnerInclude,
      exclude: config.pinnerExclude,
      namespace: config.pinnerNamespace,
    },
    deps,
  );
}

/** The pinner's own settings, under `ferry pinner`'s names (the agent's `--pinner-*` options map onto them). */
type PinnerSettings = Pick<
  PinnerCommandConfig,
  | 'addr'
  | 'tlsCert'
  | 'tlsKey'
  | 'budget'
  | 'freshFor'
  | 'upstreamTimeout'
  | 'include'
  | 'exclude'
  | 'namespace'
>;

async function startPinner(s: PinnerSettings, deps: AgentPinnerDeps): Promise<RunningPinner> {
  const pinner = createPinner({
    upstream: deps.upstream,
    store: deps.store,
    clusterUrl: deps.clusterUrl,
    budgetMs: s.budget,
    freshForMs: s.freshFor,
    upstreamTimeoutMs: s.upstreamTimeout,
    include: [...s.include],
    exclude: [...s.exclude],
    ...(s.namespace === undefined ? {} : { namespace: s.namespace }),
    metricsRegistry: deps.metricsRegistry,
    logger: deps.logger,
  });
  let server: PinnerServer;
  try {
    server = await createPinnerServer({
      pinner,
      tlsCertFile: s.tlsCert as string,
      tlsKeyFile: s.tlsKey as string,
      logger: deps.logger,
    });
  } catch (err) {
    await pinner.close();
    throw err;
  }
  const address = await server.listen({ host: listenHost(s.addr), port: s.addr.port }).catch(async (err) => {
    await server.close();
    await pinner.close();
    throw err;
  });
  deps.logger.info(
    { addr: formatAddress(address), clusterUrl: deps.clusterUrl, budgetMs: s.budget, freshForMs: s.freshFor },
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
  const deps = await openUpstreamDeps(config, 'pinner', logger);
  let running: RunningPinner;
  try {
    running = await startPinner(config, {
      upstream: deps.upstream,
      store: deps.lastKnown,
      clusterUrl: config.clusterUrl,
      metricsRegistry: new Registry(),
      logger,
    });
  } catch (err) {
    await deps.close().catch(() => {});
    throw err;
  }
  await untilShutdownSignal(logger);
  await running.close();
  await deps.close();
  logger.info('stopped');
}
