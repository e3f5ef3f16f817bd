/**
 * The agent's configuration: one table of options (option-table.ts) drives the command-line flags, the
 * environment variables (`FERRY_<UPPER_SNAKE>`) and the YAML file keys (camelCase). Precedence: flag >
 * env > YAML > default. Every value is validated with zod at start; errors name the field, its flag and
 * env var, and where the bad value came from.
 */
import { Command, CommanderError } from 'commander';
import type { z } from 'zod';
import {
  addressSchema,
  boolSchema,
  dnsNameListSchema,
  durationSchema,
  formatAddress,
  formatDuration,
  formatSize,
  hostSchema,
  intSchema,
  type ListenAddress,
  LOG_LEVELS,
  localClientListSchema,
  logLevelSchema,
  optionalPathSchema,
  optionalStringSchema,
  pathSchema,
  peerListSchema,
  regexListSchema,
  registryListSchema,
  sizeSchema,
  stringSchema,
  tagModeSchema,
  tagRuleListSchema,
  upstreamEndpointsOf,
} from './config-values.ts';
import {
  ConfigError,
  type ConfigSource,
  defineOptions,
  type LoadConfigIo,
  type OptionDefinition,
  spec,
} from './option-table.ts';

export {
  formatAddress,
  formatDuration,
  type ListenAddress,
  LOG_LEVELS,
  type LogLevel,
  parseAddress,
  parseDuration,
  splitList,
  upstreamEndpointsOf,
} from './config-values.ts';
export {
  ConfigError,
  type ConfigIssue,
  type ConfigSource,
  type LoadConfigIo,
  type OptionDefinition,
  type OptionType,
} from './option-table.ts';

export const agentSpecs = {
  registryAddr: spec({
    type: 'address',
    schema: addressSchema,
    default: ':5000',
    description: 'Listen address of the OCI registry that containerd and peers pull from.',
  }),
  routerAddr: spec({
    type: 'address',
    schema: addressSchema,
    default: ':5001',
    description: 'Listen address of the P2P router (libp2p TCP).',
  }),
  metricsAddr: spec({
    type: 'address',
    schema: addressSchema,
    default: ':9090',
    description: 'Listen address of the ops server: /metrics, /healthz, /readyz.',
  }),
  statusAddr: spec({
    type: 'address',
    schema: addressSchema,
    default: '127.0.0.1:9091',
    description:
      "Listen address of the status server (the status page at /, /status, /debug/measure: image names and digests). Keep it on the node's loopback; it answers only loopback clients.",
  }),
  advertiseHost: spec({
    type: 'host',
    schema: hostSchema,
    default: undefined,
    description:
      "IP address announced to peers (set it to the node IP, e.g. from the downward API's status.hostIP). Default: the router's listen host.",
  }),
  localClients: spec({
    type: 'list',
    schema: localClientListSchema,
    default: [],
    description:
      "Addresses and CIDRs (10.0.0.5, 10.0.0.0/24, fd00::/8) whose registry requests count as the node's own containerd's, served without peer authentication; everyone else must sign as a peer (network key) or gets 403. Empty: loopback, the advertised host and the registry's listen host.",
  }),
  containerdSock: spec({
    type: 'path',
    schema: pathSchema,
    default: '/run/containerd/containerd.sock',
    description: "containerd's gRPC socket.",
  }),
  containerdNamespace: spec({
    type: 'string',
    schema: stringSchema,
    default: 'k8s.io',
    description: 'containerd namespace whose images are shared (k8s.io for the CRI).',
  }),
  containerdContentPath: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: '/var/lib/containerd/io.containerd.content.v1.content',
    description:
      "containerd's content directory, read directly when serving blobs; empty: read through gRPC only.",
  }),
  containerdConfigPath: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: '/etc/containerd/certs.d',
    description:
      "The hosts directory `ferry configure` writes; at start the agent checks that containerd's CRI config_path uses it. Empty: skip the check.",
  }),
  dataDir: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: undefined,
    description:
      'Directory for persistent state: the peer identity key and the last-known tag database (`<dataDir>/tags`). Default: none, the peer id changes and last-known digests are lost on restart.',
  }),
  networkKeyFile: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: undefined,
    description:
      "File with the cluster's network keys (one 64-hex-character key per line, first = primary; `#` comments): only holders of a listed key join the DHT. Read at start. Without it anyone who reaches the router port can join (a warning is logged).",
  }),
  bootstrapPeers: spec({
    type: 'list',
    schema: peerListSchema,
    default: [],
    description:
      'Peers to join the network through: ip:port, [v6]:port or a multiaddr (/ip4/…/tcp/…[/p2p/…]).',
  }),
  bootstrapDns: spec({
    type: 'list',
    schema: dnsNameListSchema,
    default: [],
    description: 'DNS names (name:port) whose A/AAAA records are bootstrap peers, e.g. a headless Service.',
  }),
  mirroredRegistries: spec({
    type: 'list',
    schema: registryListSchema,
    default: [],
    description:
      'Registries to mirror (https://docker.io, ghcr.io, http://10.0.0.9:5000); empty or `_default`: all registries.',
  }),
  registryFilters: spec({
    type: 'list',
    schema: regexListSchema,
    default: [],
    description:
      'Regular expressions over `<registry>/<repo>[:<tag>]`: matching references are never mirrored nor advertised (e.g. `:latest$`).',
  }),
  resolveTags: spec({
    type: 'bool',
    schema: boolSchema,
    default: true,
    description:
      'Answer tag requests (tag -> digest) at all; false (Spegel meaning): every tag is in mode upstream, only digests are mirrored.',
  }),
  tagPolicy: spec({
    type: 'list',
    schema: tagRuleListSchema,
    default: [],
    description:
      'Ordered tag rules `pattern=mode`, first match wins; the pattern is a regex over `<registry>/<repo>:<tag>`, the mode cluster, upstream or verify (e.g. `:latest$=upstream`). YAML also takes `{pattern, mode}`.',
  }),
  defaultTagMode: spec({
    type: 'tag-mode',
    schema: tagModeSchema,
    default: 'verify',
    description:
      'Mode of tags no rule matches: verify (ask the upstream, serve its digest from the cluster; last-known digest in an outage), cluster or upstream.',
  }),
  upstreamTimeout: spec({
    type: 'duration',
    schema: durationSchema,
    default: '1s',
    description:
      'Deadline for the upstream registry to name a tag digest in mode verify; past it the cluster answers with the last-known digest.',
  }),
  upstreamCredentials: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: undefined,
    description:
      'Docker config.json (or the .dockerconfigjson of a Secret) with upstream credentials for verify. Without an entry for a registry, its 401/403 tags are deferred to containerd.',
  }),
  mirrorResolveTimeout: spec({
    type: 'duration',
    schema: durationSchema,
    default: '20ms',
    description: 'How long to wait for a peer to be found while no fetch is in flight, before answering 404.',
  }),
  mirrorResolveRetries: spec({
    type: 'int',
    schema: intSchema(1, 100),
    default: 3,
    description: 'How many peers to try for one request before answering 404.',
  }),
  firstPull: spec({
    type: 'bool',
    schema: boolSchema,
    default: true,
    description:
      'First-pull sharing: a blob (or manifest by digest) no peer holds is fetched from the upstream by one node, into a spool under --data-dir, and streamed to the local containerd and to peers as it arrives. false: such requests answer 404 and each containerd asks the upstream (no sharing during a first pull). Off without --data-dir.',
  }),
  spoolMaxBytes: spec({
    type: 'size',
    schema: sizeSchema,
    default: '4Gi',
    description:
      'Most bytes the first-pull spool (`<dataDir>/spool`) holds at once; a blob that does not fit (or a disk without room for it) is answered 404, so containerd fetches it from the upstream.',
  }),
  resyncInterval: spec({
    type: 'duration',
    schema: durationSchema,
    default: '1m',
    description:
      'How often to re-list containerd images and content (garbage collection publishes no events); 0 disables.',
  }),
  shutdownTimeout: spec({
    type: 'duration',
    schema: durationSchema,
    default: '10s',
    description: 'On SIGTERM, how long to let running transfers finish before exiting.',
  }),
  pinner: spec({
    type: 'bool',
    schema: boolSchema,
    default: false,
    description:
      'Also run the pinner (the admission webhook that pins pod images to digests) in this agent; needs --pinner-tls-cert and --pinner-tls-key.',
  }),
  pinnerAddr: spec({
    type: 'address',
    schema: addressSchema,
    default: ':8443',
    description: "Listen address of the pinner's HTTPS server: POST /mutate, /healthz, /metrics.",
  }),
  pinnerTlsCert: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: undefined,
    description: "The pinner's serving certificate (PEM); re-read when the file changes.",
  }),
  pinnerTlsKey: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: undefined,
    description: "The pinner's private key (PEM); re-read when the file changes.",
  }),
  pinnerBudget: spec({
    type: 'duration',
    schema: durationSchema,
    default: '2s',
    description:
      "Total time the pinner spends resolving one pod's images (upstream, last-known, cluster); keep it below the webhook's timeoutSeconds.",
  }),
  pinnerFreshFor: spec({
    type: 'duration',
    schema: durationSchema,
    default: '10s',
    description:
      'The pinner reuses an upstream answer this young without asking the upstream again; 0 disables.',
  }),
  pinnerInclude: spec({
    type: 'list',
    schema: regexListSchema,
    default: [],
    description:
      'Regular expressions over `<registry>/<repo>:<tag>`: only matching images are pinned; empty: all.',
  }),
  pinnerExclude: spec({
    type: 'list',
    schema: regexListSchema,
    default: [],
    description: 'Regular expressions over `<registry>/<repo>:<tag>`: matching images are never pinned.',
  }),
  pinnerNamespace: spec({
    type: 'string',
    schema: optionalStringSchema,
    fallbackEnv: 'POD_NAMESPACE',
    default: undefined,
    description: "Ferry's own namespace, whose pods are never pinned. Default: $POD_NAMESPACE.",
  }),
  logLevel: spec({
    type: 'log-level',
    schema: logLevelSchema,
    default: 'info',
    description: `Log level: ${LOG_LEVELS.join(', ')}.`,
  }),
  config: spec({
    type: 'path',
    schema: optionalPathSchema,
    default: undefined,
    description: 'YAML file with options (camelCase keys); flags and env override it.',
  }),
};

/** The agent's option table. */
export const agentTable = defineOptions(agentSpecs, 'config');

/** Names of the agent's options (camelCase; also the YAML keys). */
export type AgentOptionName = keyof typeof agentSpecs;

/** One row of the agent's option table. */
export type AgentOptionDefinition = OptionDefinition<AgentOptionName>;

/** The option table (README and the Helm chart are checked against it). */
export const agentOptions: readonly AgentOptionDefinition[] = agentTable.options;

/** The validated agent configuration. Durations are in milliseconds. */
export type AgentConfig = {
  readonly [K in AgentOptionName]: z.output<(typeof agentSpecs)[K]['schema']>;
} & {
  /** Derived from mirroredRegistries: registry host -> base URL for the upstream client (see upstreamEndpointsOf). */
  readonly upstreamEndpoints: Readonly<Record<string, string>>;
  /** Where each value came from. */
  readonly sources: Readonly<Record<AgentOptionName, ConfigSource>>;
};

/** Registers every option of the table as a flag on a commander command. */
export function addAgentOptions(cmd: Command): Command {
  return agentTable.addTo(cmd);
}

/**
 * Resolves the configuration from already-parsed flag values (commander's `opts()`, keys camelCase),
 * the environment and the optional YAML file. Throws ConfigError.
 */
export function resolveAgentConfig(
  flags: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
  io: LoadConfigIo = {},
): AgentConfig {
  const r = agentTable.resolve(flags, env, io, ({ values, sources }, issues, option) => {
    // The listeners need distinct ports.
    const listeners = ['registryAddr', 'routerAddr', 'metricsAddr', 'statusAddr'] as const;
    for (let i = 0; i < listeners.length; i++) {
      for (let j = 0; j < i; j++) {
        const a = values[listeners[j]!];
        const b = values[listeners[i]!];
        const overlap = a.host === b.host || a.host === '' || b.host === '';
        if (a.port !== 0 && a.port === b.port && overlap)
          issues.add(
            option(listeners[i]!),
            sources[listeners[i]!],
            `port ${b.port} is already used by ${listeners[j]}`,
          );
      }
    }
  });
  return Object.freeze({
    ...r.values,
    upstreamEndpoints: upstreamEndpointsOf(r.raw.mirroredRegistries),
    sources: r.sources,
  }) as AgentConfig;
}

/**
 * Loads the agent configuration from command-line arguments (flags only, e.g. ['--registry-addr', ':6000']),
 * the environment and the YAML file named by --config / FERRY_CONFIG. Throws ConfigError.
 */
export function loadAgentConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = process.env,
  io: LoadConfigIo = {},
): AgentConfig {
  const cmd = addAgentOptions(new Command('agent'))
    .exitOverride()
    .configureOutput({ writeErr: () => {}, writeOut: () => {} })
    .helpOption(false)
    .allowExcessArguments(false);
  try {
    cmd.parse([...argv], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      const message = err.message.replace(/^error: /, '');
      throw new ConfigError([{ field: undefined, source: 'flag', message }], [`invalid config: ${message}`]);
    }
    throw err;
  }
  return resolveAgentConfig(cmd.opts(), env, io);
}

/** A plain-JSON view of a config (for the startup log and the status page). */
export function describeConfig(config: AgentConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const o of agentOptions) {
    const v = config[o.name];
    if (o.type === 'address') out[o.name] = formatAddress(v as ListenAddress);
    else if (o.type === 'duration') out[o.name] = formatDuration(v as number);
    else if (o.type === 'size') out[o.name] = formatSize(v as number);
    else out[o.name] = v;
  }
  return out;
}

/** The agent's option table as Markdown (the README embeds exactly this). */
export function renderOptionsMarkdown(): string {
  return agentTable.renderMarkdown();
}
