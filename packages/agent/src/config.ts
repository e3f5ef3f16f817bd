/**
 * The agent's configuration: one table of options drives the command-line flags, the environment
 * variables (`FERRY_<UPPER_SNAKE>`) and the YAML file keys (camelCase). Precedence: flag > env > YAML >
 * default. Every value is validated with zod at start; errors name the field, its flag and env var, and
 * where the bad value came from.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { isTagMode, parseTagRule, TAG_MODES, type TagMode, type TagRule } from '@ferry/registry';
import { Command, CommanderError } from 'commander';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { isWildcardRegistry, parseRegistryUrl } from './registry-url.ts';

// ---------------------------------------------------------------------------------------------------
// Value parsers (exported: tests and other commands use them)

/** A listen address. `host` is '' for "all interfaces" (`:5000`); IPv6 hosts are stored without brackets. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** Thrown by the value parsers; the message completes "expected …". */
class ValueError extends Error {}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a Go-style duration (`20ms`, `1s`, `1.5s`, `5m`, `1h30m`, `0`) into milliseconds. */
export function parseDuration(input: string): number {
  const s = input.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) throw new ValueError(`expected a duration like 20ms, got ${JSON.stringify(input)}`);
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos === 0) throw new ValueError(`expected a duration like 20ms, got ${JSON.stringify(input)}`);
  return total;
}

/** Formats milliseconds as a duration string that parseDuration reads back (`20ms`, `1s`, `5m`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

const HOSTNAME =
  /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$/;

function checkHost(host: string, input: string): string {
  if (host.startsWith('[') && host.endsWith(']')) {
    const inner = host.slice(1, -1);
    if (isIP(inner) !== 6)
      throw new ValueError(`expected an IPv6 address in brackets, got ${JSON.stringify(input)}`);
    return inner;
  }
  if (isIP(host) === 4 || HOSTNAME.test(host)) return host;
  if (isIP(host) === 6)
    throw new ValueError(`IPv6 addresses need brackets, like [::1]:5000; got ${JSON.stringify(input)}`);
  throw new ValueError(`expected a host name or IP address, got ${JSON.stringify(input)}`);
}

/**
 * Parses `host:port`, `:port` (all interfaces) or `[v6]:port`. With `requireHost`, `:port` is an error.
 */
export function parseAddress(input: string, requireHost = false): ListenAddress {
  const s = input.trim();
  const idx = s.lastIndexOf(':');
  const shape = 'an address like :5000, 127.0.0.1:5000 or [::1]:5000';
  if (idx < 0) throw new ValueError(`expected ${shape}, got ${JSON.stringify(input)}`);
  const hostPart = s.slice(0, idx);
  const portPart = s.slice(idx + 1);
  if (!/^\d{1,5}$/.test(portPart) || Number(portPart) > 65535) {
    throw new ValueError(`expected ${shape} (port 0-65535), got ${JSON.stringify(input)}`);
  }
  if (hostPart === '') {
    if (requireHost) throw new ValueError(`expected host:port with a host, got ${JSON.stringify(input)}`);
    return { host: '', port: Number(portPart) };
  }
  return { host: checkHost(hostPart, input), port: Number(portPart) };
}

/** Formats an address back to `host:port` (`[v6]:port`, `:port` for all interfaces). */
export function formatAddress(a: ListenAddress): string {
  return `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

/** Parses a boolean: true/false, 1/0, yes/no, on/off (case-insensitive). */
export function parseBoolean(input: string): boolean {
  const s = input.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(s)) return true;
  if (['false', '0', 'no', 'off'].includes(s)) return false;
  throw new ValueError(`expected true or false, got ${JSON.stringify(input)}`);
}

/** Splits a comma-separated list; blanks are dropped. */
export function splitList(input: string): string[] {
  return input
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

// ---------------------------------------------------------------------------------------------------
// zod schemas per option type. Input is whatever a source gives: a string (flag, env), or a YAML value.

function fromString<T>(
  expected: string,
  parse: (s: string) => T,
  acceptNative?: (v: unknown) => T | undefined,
): z.ZodType<T, unknown> {
  return z.unknown().transform((v, ctx): T => {
    try {
      if (acceptNative) {
        const native = acceptNative(v);
        if (native !== undefined) return native;
      }
      if (typeof v !== 'string') throw new ValueError(`expected ${expected}, got ${JSON.stringify(v)}`);
      return parse(v);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
      return z.NEVER;
    }
  });
}

/** Like fromString, but undefined/null (no default) and '' give undefined. */
function optional<T>(expected: string, parse: (s: string) => T): z.ZodType<T | undefined, unknown> {
  return z.unknown().transform((v, ctx): T | undefined => {
    if (v === undefined || v === null) return undefined;
    try {
      if (typeof v !== 'string') throw new ValueError(`expected ${expected}, got ${JSON.stringify(v)}`);
      return v.trim() === '' ? undefined : parse(v.trim());
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
      return z.NEVER;
    }
  });
}

/** A list: comma-separated string (flags, env) or a YAML array of strings; items parsed by `item`. */
function listOf<T>(item: (s: string) => T): z.ZodType<readonly T[], unknown> {
  return z.unknown().transform((v, ctx): readonly T[] => {
    try {
      let items: string[];
      if (typeof v === 'string') items = splitList(v);
      else if (Array.isArray(v)) {
        items = v.map((x) => {
          if (typeof x !== 'string')
            throw new ValueError(`expected a list of strings, got item ${JSON.stringify(x)}`);
          return x.trim();
        });
        items = items.filter((x) => x !== '');
      } else
        throw new ValueError(`expected a list (comma-separated, or a YAML array), got ${JSON.stringify(v)}`);
      return Object.freeze(items.map(item));
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
      return z.NEVER;
    }
  });
}

const addressSchema = fromString('an address like :5000', (s) => Object.freeze(parseAddress(s)));
const durationSchema = fromString('a duration like 20ms', parseDuration);
const boolSchema = fromString('true or false', parseBoolean, (v) => (typeof v === 'boolean' ? v : undefined));
const pathSchema = fromString('a path', (s) => {
  if (s.trim() === '') throw new ValueError('expected a path, got an empty value');
  return s.trim();
});
/** A path where '' means "none". */
const optionalPathSchema = optional('a path', (s) => s);
const stringSchema = fromString('a string', (s) => {
  if (s.trim() === '') throw new ValueError('expected a non-empty string');
  return s.trim();
});
function intSchema(min: number, max: number) {
  return fromString(
    `an integer between ${min} and ${max}`,
    (s) => {
      if (!/^-?\d+$/.test(s.trim())) throw new ValueError(`expected an integer, got ${JSON.stringify(s)}`);
      return checkInt(Number(s.trim()));
    },
    (v) => (typeof v === 'number' ? checkInt(v) : undefined),
  );
  function checkInt(n: number): number {
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ValueError(`expected an integer between ${min} and ${max}, got ${n}`);
    }
    return n;
  }
}
const hostSchema = optional('a host name or IP address', (s) => checkHost(s, s));

/** Log levels pino understands. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
/** One of LOG_LEVELS. */
export type LogLevel = (typeof LOG_LEVELS)[number];
const logLevelSchema = fromString('a log level', (s): LogLevel => {
  const l = s.trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(l)) {
    throw new ValueError(`expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(s)}`);
  }
  return l as LogLevel;
});

/** A registry in --mirrored-registries: a URL or a bare host; the value kept is the host[:port]. */
function registryItem(s: string): string {
  if (isWildcardRegistry(s)) return '*';
  try {
    const host = parseRegistryUrl(s, 'mirrored registry').host;
    return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
  } catch (err) {
    throw new ValueError((err as Error).message);
  }
}
const registryListSchema = listOf(registryItem).transform((list): readonly string[] =>
  list.includes('*') ? Object.freeze([]) : Object.freeze([...new Set(list)]),
);

function regexItem(s: string): string {
  try {
    new RegExp(s);
  } catch (err) {
    const why = (err as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '');
    throw new ValueError(`invalid regular expression ${JSON.stringify(s)}: ${why}`);
  }
  return s;
}

/** Tag rules: `pattern=mode` strings (comma-separated, or a YAML array), or YAML `{pattern, mode}` objects. */
const tagRuleListSchema = z.unknown().transform((v, ctx): readonly TagRule[] => {
  try {
    let items: unknown[];
    if (typeof v === 'string') items = splitList(v);
    else if (Array.isArray(v)) items = v;
    else
      throw new ValueError(
        `expected a list of pattern=mode rules (comma-separated, or a YAML array), got ${JSON.stringify(v)}`,
      );
    const rules = items.map((x): TagRule => {
      if (typeof x === 'string') return Object.freeze(parseTagRule(x.trim()));
      if (typeof x === 'object' && x !== null && !Array.isArray(x)) {
        const { pattern, mode, ...rest } = x as Record<string, unknown>;
        const extra = Object.keys(rest);
        if (extra.length > 0) throw new ValueError(`unknown key ${JSON.stringify(extra[0])} in tag rule`);
        if (typeof pattern !== 'string' || pattern === '')
          throw new ValueError(`a tag rule needs a pattern (string), got ${JSON.stringify(x)}`);
        const m = typeof mode === 'string' ? mode.trim().toLowerCase() : mode;
        if (!isTagMode(m))
          throw new ValueError(
            `tag rule ${JSON.stringify(pattern)}: mode must be one of ${TAG_MODES.join(', ')}, got ${JSON.stringify(mode)}`,
          );
        regexItem(pattern);
        return Object.freeze({ pattern, mode: m });
      }
      throw new ValueError(`expected a rule pattern=mode or {pattern, mode}, got ${JSON.stringify(x)}`);
    });
    return Object.freeze(rules);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
    return z.NEVER;
  }
});

const tagModeSchema = fromString('a tag mode', (s): TagMode => {
  const m = s.trim().toLowerCase();
  if (!isTagMode(m))
    throw new ValueError(`expected one of ${TAG_MODES.join(', ')}, got ${JSON.stringify(s)}`);
  return m;
});

/**
 * Upstream base URLs from --mirrored-registries: `http://10.0.0.9:5000` → `{ '10.0.0.9:5000':
 * 'http://10.0.0.9:5000' }`. Bare hosts mean https (the upstream client's default) and docker.io goes to
 * registry-1.docker.io, so only explicit http:// URLs (and https:// other than docker.io) are listed.
 */
export function upstreamEndpointsOf(registries: unknown): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  const items =
    typeof registries === 'string' ? splitList(registries) : Array.isArray(registries) ? registries : [];
  for (const item of items) {
    if (typeof item !== 'string' || isWildcardRegistry(item)) continue;
    try {
      const u = parseRegistryUrl(item, 'mirrored registry');
      const host = registryItem(item);
      if (host === 'docker.io') continue;
      out[host] = u.origin;
    } catch {
      // validated elsewhere
    }
  }
  return Object.freeze(out);
}

function peerItem(s: string): string {
  if (s.startsWith('/')) {
    if (!/^(\/[^/\s]+\/[^/\s]+)+$/.test(s)) throw new ValueError(`invalid multiaddr ${JSON.stringify(s)}`);
    return s;
  }
  const a = parseAddress(s, true);
  if (a.port === 0) throw new ValueError(`expected a peer address with a port, got ${JSON.stringify(s)}`);
  return s;
}

// ---------------------------------------------------------------------------------------------------
// The option table

/** How a value is written (drives parsing, help and docs). */
export type OptionType =
  | 'address'
  | 'duration'
  | 'int'
  | 'bool'
  | 'string'
  | 'path'
  | 'host'
  | 'list'
  | 'log-level'
  | 'tag-mode';

interface Spec<S extends z.ZodType> {
  type: OptionType;
  schema: S;
  /** The default as a user would write it (string, boolean, list); undefined = none. */
  default: string | number | boolean | readonly string[] | undefined;
  description: string;
  /** false: not settable in the YAML file (only --config itself). */
  yaml?: boolean;
}

function spec<S extends z.ZodType>(s: Spec<S>): Spec<S> {
  return s;
}

const specs = {
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
  advertiseHost: spec({
    type: 'host',
    schema: hostSchema,
    default: undefined,
    description:
      "IP address announced to peers (set it to the node IP, e.g. from the downward API's status.hostIP). Default: the router's listen host.",
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
  bootstrapPeers: spec({
    type: 'list',
    schema: listOf(peerItem),
    default: [],
    description:
      'Peers to join the network through: ip:port, [v6]:port or a multiaddr (/ip4/…/tcp/…[/p2p/…]).',
  }),
  bootstrapDns: spec({
    type: 'list',
    schema: listOf((s) => {
      parseAddress(s, true);
      return s;
    }),
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
    schema: listOf(regexItem),
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
    schema: listOf(regexItem),
    default: [],
    description:
      'Regular expressions over `<registry>/<repo>:<tag>`: only matching images are pinned; empty: all.',
  }),
  pinnerExclude: spec({
    type: 'list',
    schema: listOf(regexItem),
    default: [],
    description: 'Regular expressions over `<registry>/<repo>:<tag>`: matching images are never pinned.',
  }),
  pinnerNamespace: spec({
    type: 'string',
    schema: optional('a namespace', (s) => s),
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
    yaml: false,
    description: 'YAML file with options (camelCase keys); flags and env override it.',
  }),
};

/** Names of the agent's options (camelCase; also the YAML keys). */
export type AgentOptionName = keyof typeof specs;

/** Where a value came from. */
export type ConfigSource = 'flag' | 'env' | 'file' | 'default';

/** One row of the option table. */
export interface AgentOptionDefinition {
  /** camelCase name: the config field. */
  name: AgentOptionName;
  /** The command-line flag, e.g. '--registry-addr'. */
  flag: string;
  /** The environment variable, e.g. 'FERRY_REGISTRY_ADDR'. */
  env: string;
  /** The YAML key (camelCase), or undefined when the option cannot be set in the file. */
  yamlKey: string | undefined;
  type: OptionType;
  /** The default as written on the command line (string, boolean or list); undefined = none. */
  default: string | number | boolean | readonly string[] | undefined;
  description: string;
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The option table (README and the Helm chart are checked against it). */
export const agentOptions: readonly AgentOptionDefinition[] = Object.freeze(
  (Object.keys(specs) as AgentOptionName[]).map((name) => {
    const s: Spec<z.ZodType> = specs[name];
    return Object.freeze({
      name,
      flag: `--${kebab(name)}`,
      env: `FERRY_${kebab(name).replaceAll('-', '_').toUpperCase()}`,
      yamlKey: s.yaml === false ? undefined : name,
      type: s.type,
      default: s.default,
      description: s.description,
    });
  }),
);

/** The validated agent configuration. Durations are in milliseconds. */
export type AgentConfig = {
  readonly [K in AgentOptionName]: z.output<(typeof specs)[K]['schema']>;
} & {
  /** Derived from mirroredRegistries: registry host -> base URL for the upstream client (see upstreamEndpointsOf). */
  readonly upstreamEndpoints: Readonly<Record<string, string>>;
  /** Where each value came from. */
  readonly sources: Readonly<Record<AgentOptionName, ConfigSource>>;
};

// ---------------------------------------------------------------------------------------------------
// Errors

/** One problem found while loading the configuration. */
export interface ConfigIssue {
  /** The option name, or undefined for problems with the file as a whole. */
  field: AgentOptionName | undefined;
  source: ConfigSource | undefined;
  message: string;
}

/** Thrown by loadAgentConfig; `message` has one line per issue, each starting with 'invalid config: '. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly issues: readonly ConfigIssue[];
  constructor(issues: ConfigIssue[], formatted: string[]) {
    super(formatted.join('\n'));
    this.issues = issues;
  }
}

function describeSource(source: ConfigSource, file: string | undefined): string {
  if (source === 'file') return `from config file ${file}`;
  return `from ${source}`;
}

// ---------------------------------------------------------------------------------------------------
// Commander integration

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function helpDefault(d: AgentOptionDefinition['default']): string {
  if (d === undefined) return 'none';
  if (Array.isArray(d)) return d.length === 0 ? 'empty' : d.join(',');
  return String(d);
}

/** Registers every option of the table as a flag on a commander command. */
export function addAgentOptions(cmd: Command): Command {
  for (const o of agentOptions) {
    const help = `${o.description} [env ${o.env}; default ${helpDefault(o.default)}]`;
    if (o.type === 'bool') {
      cmd.option(`${o.flag} [bool]`, help);
      cmd.option(`--no-${o.flag.slice(2)}`, `Same as ${o.flag}=false.`);
    } else if (o.type === 'list') {
      cmd.option(`${o.flag} <list>`, `${help} (comma-separated, repeatable)`, collect);
    } else {
      cmd.option(`${o.flag} <value>`, help);
    }
  }
  return cmd;
}

/** I/O used while loading (injectable for tests). */
export interface LoadConfigIo {
  /** Reads the YAML file named by --config (default: fs.readFileSync utf8). */
  readFile?: (path: string) => string;
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
  const issues: ConfigIssue[] = [];
  const lines: string[] = [];
  const label = (o: AgentOptionDefinition) => `${o.name} (${o.flag} / ${o.env})`;
  const fail = (o: AgentOptionDefinition | undefined, source: ConfigSource | undefined, message: string) => {
    issues.push({ field: o?.name, source, message });
    lines.push(`invalid config: ${o ? `${label(o)}: ` : ''}${message}`);
  };

  const raw = (o: AgentOptionDefinition, source: ConfigSource, v: unknown): unknown => {
    // Lists given as several flags: join them so each item is split on commas.
    if (source === 'flag' && o.type === 'list' && Array.isArray(v)) return v.join(',');
    return v;
  };

  // Values by source.
  const byFlag = new Map<AgentOptionName, unknown>();
  const byEnv = new Map<AgentOptionName, unknown>();
  const byFile = new Map<AgentOptionName, unknown>();
  for (const o of agentOptions) {
    const f = flags[o.name];
    if (f !== undefined) byFlag.set(o.name, raw(o, 'flag', f));
    const e = env[o.env];
    if (e !== undefined && e !== '') byEnv.set(o.name, e);
  }

  // The YAML file.
  const configOption = agentOptions.find((o) => o.name === 'config')!;
  const configPath = (byFlag.get('config') ?? byEnv.get('config')) as string | undefined;
  const configSource: ConfigSource = byFlag.has('config') ? 'flag' : 'env';
  if (configPath !== undefined && String(configPath).trim() !== '') {
    const path = String(configPath).trim();
    let text: string | undefined;
    try {
      text = (io.readFile ?? ((p: string) => readFileSync(p, 'utf8')))(path);
    } catch (err) {
      fail(
        configOption,
        configSource,
        `cannot read config file ${path}: ${(err as Error).message} (${describeSource(configSource, undefined)})`,
      );
    }
    if (text !== undefined) {
      let doc: unknown;
      try {
        doc = parseYaml(text);
      } catch (err) {
        fail(undefined, 'file', `cannot parse config file ${path}: ${(err as Error).message.split('\n')[0]}`);
      }
      if (doc === null || doc === undefined) {
        // empty file: nothing set
      } else if (typeof doc !== 'object' || Array.isArray(doc)) {
        fail(undefined, 'file', `config file ${path} must be a YAML mapping of option names to values`);
      } else {
        const yamlKeys = agentOptions.filter((o) => o.yamlKey !== undefined).map((o) => o.yamlKey!);
        const fileSchema = z.object(Object.fromEntries(yamlKeys.map((k) => [k, z.unknown()]))).strict();
        const checked = fileSchema.safeParse(doc);
        if (!checked.success) {
          for (const issue of checked.error.issues) {
            if (issue.code === 'unrecognized_keys') {
              for (const key of issue.keys) {
                const hint = suggest(key, yamlKeys);
                fail(
                  undefined,
                  'file',
                  `unknown key ${JSON.stringify(key)} in config file ${path}${hint ? ` (did you mean ${hint}?)` : ''}`,
                );
              }
            }
          }
        }
        for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
          const o = agentOptions.find((x) => x.yamlKey === key);
          if (o && value !== undefined) byFile.set(o.name, value);
        }
      }
    }
  }

  // Validate every given value (a bad value is an error even where a higher source overrides it).
  const values: Record<string, unknown> = {};
  const sources: Record<string, ConfigSource> = {};
  for (const o of agentOptions) {
    const s: Spec<z.ZodType> = specs[o.name];
    const candidates: [ConfigSource, unknown][] = [];
    if (byFlag.has(o.name)) candidates.push(['flag', byFlag.get(o.name)]);
    if (byEnv.has(o.name)) candidates.push(['env', byEnv.get(o.name)]);
    if (byFile.has(o.name)) candidates.push(['file', byFile.get(o.name)]);
    let chosen = false;
    for (const [source, value] of candidates) {
      const r = s.schema.safeParse(value);
      if (!r.success) {
        for (const issue of r.error.issues) {
          fail(o, source, `${issue.message} (${describeSource(source, configPath as string | undefined)})`);
        }
      } else if (!chosen) {
        if (o.name === 'mirroredRegistries') values.upstreamEndpoints = upstreamEndpointsOf(value);
        values[o.name] = r.data;
        sources[o.name] = source;
        chosen = true;
      }
    }
    if (!chosen) {
      sources[o.name] = 'default';
      const r = s.schema.safeParse(s.default);
      if (!r.success) throw new Error(`bug: default of ${o.name} does not validate: ${r.error.message}`);
      values[o.name] = r.data;
    }
  }

  // Cross-field checks: the three listeners need distinct ports.
  if (issues.length === 0) {
    const listeners = ['registryAddr', 'routerAddr', 'metricsAddr'] as const;
    for (let i = 0; i < listeners.length; i++) {
      for (let j = 0; j < i; j++) {
        const a = values[listeners[j]!] as ListenAddress;
        const b = values[listeners[i]!] as ListenAddress;
        const overlap = a.host === b.host || a.host === '' || b.host === '';
        if (a.port !== 0 && a.port === b.port && overlap) {
          const o = agentOptions.find((x) => x.name === listeners[i])!;
          fail(o, sources[o.name], `port ${b.port} is already used by ${listeners[j]}`);
        }
      }
    }
  }

  if (issues.length > 0) throw new ConfigError(issues, lines);
  values.upstreamEndpoints ??= Object.freeze({});
  values.sources = Object.freeze(sources);
  return Object.freeze(values) as AgentConfig;
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
    else out[o.name] = v;
  }
  return out;
}

/** The option table as Markdown (the README embeds exactly this). */
export function renderOptionsMarkdown(): string {
  const esc = (s: string) => s.replaceAll('|', '\\|');
  const rows = agentOptions.map((o) => {
    const d =
      o.default === undefined
        ? '—'
        : Array.isArray(o.default)
          ? o.default.length === 0
            ? '`[]`'
            : `\`${o.default.join(',')}\``
          : `\`${String(o.default)}\``;
    return `| \`${o.flag}\` | \`${o.env}\` | ${o.yamlKey ? `\`${o.yamlKey}\`` : '—'} | ${o.type} | ${d} | ${esc(o.description)} |`;
  });
  return [
    '| flag | env | YAML key | type | default | description |',
    '|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

function suggest(key: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDist = 3;
  for (const c of candidates) {
    const d = editDistance(key.toLowerCase(), c.toLowerCase());
    if (d < bestDist) {
      bestDist = d;
      best = c;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
