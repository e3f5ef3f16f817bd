/**
 * The machinery behind every option table (`ferry agent`, `ferry pinner`): one table drives the
 * command-line flags, the environment variables and the YAML file keys (camelCase), the help text and
 * the README tables. Precedence: flag > env > YAML > fallback env > default. Every given value is
 * validated with its zod schema; errors name the field, its flag and env var, and where the bad value
 * came from.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { splitList } from './config-values.ts';

/** How a value is written (drives help and docs). */
export type OptionType =
  | 'address'
  | 'duration'
  | 'size'
  | 'int'
  | 'bool'
  | 'string'
  | 'path'
  | 'host'
  | 'url'
  | 'list'
  | 'log-level'
  | 'tag-mode';

/** One option as a table declares it. */
export interface OptionSpec<S extends z.ZodType = z.ZodType> {
  type: OptionType;
  schema: S;
  /** The default as a user would write it (string, boolean, list); undefined = none. */
  default: string | number | boolean | readonly string[] | undefined;
  description: string;
  /** false: not settable in the YAML file. */
  yaml?: boolean;
  /** The environment variable, when not `FERRY_<UPPER_SNAKE of the name>`. */
  env?: string;
  /** Another environment variable read when no source sets the option (e.g. POD_NAMESPACE). */
  fallbackEnv?: string;
  /** Set: the option has no default and must be given; the text says why. */
  required?: string;
}

/** Declares an option (keeps the schema's type). */
export function spec<S extends z.ZodType>(s: OptionSpec<S>): OptionSpec<S> {
  return s;
}

/** Where a value came from. */
export type ConfigSource = 'flag' | 'env' | 'file' | 'default';

/** One row of an option table. */
export interface OptionDefinition<N extends string = string> {
  /** camelCase name: the config field. */
  name: N;
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

/** One problem found while loading a configuration. */
export interface ConfigIssue {
  /** The option name, or undefined for problems with the file as a whole or the command line. */
  field: string | undefined;
  source: ConfigSource | undefined;
  message: string;
}

/** Thrown while loading; `message` has one line per issue, each starting with 'invalid config: '. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly issues: readonly ConfigIssue[];
  constructor(issues: ConfigIssue[], formatted: string[]) {
    super(formatted.join('\n'));
    this.issues = issues;
  }
}

/** Collects issues in the common format. */
export class IssueList {
  readonly issues: ConfigIssue[] = [];
  readonly lines: string[] = [];
  add(o: OptionDefinition | undefined, source: ConfigSource | undefined, message: string): void {
    this.issues.push({ field: o?.name, source, message });
    this.lines.push(`invalid config: ${o ? `${o.name} (${o.flag} / ${o.env}): ` : ''}${message}`);
  }
  throwIfAny(): void {
    if (this.issues.length > 0) throw new ConfigError(this.issues, this.lines);
  }
}

/** I/O used while loading (injectable for tests). */
export interface LoadConfigIo {
  /** Reads the YAML file named by the table's file option (default: fs.readFileSync utf8). */
  readFile?: (path: string) => string;
}

/** Values by option name, as the schemas output them. */
export type OptionValues<Specs extends Record<string, OptionSpec>> = {
  readonly [K in keyof Specs]: z.output<Specs[K]['schema']>;
};

/** What `resolve` gives: the values, where each came from, and the raw input that was chosen. */
export interface Resolved<Specs extends Record<string, OptionSpec>> {
  values: OptionValues<Specs>;
  sources: Readonly<Record<keyof Specs, ConfigSource>>;
  raw: Readonly<Partial<Record<keyof Specs, unknown>>>;
}

/** An option table and what it drives. */
export interface OptionTable<Specs extends Record<string, OptionSpec>> {
  readonly options: readonly OptionDefinition<keyof Specs & string>[];
  /** Registers every option as a flag on a commander command. */
  addTo(cmd: Command): Command;
  /**
   * Resolves values from parsed flags (commander's `opts()`), the environment and the YAML file named
   * by the table's file option. `check` adds cross-field issues once every value is valid. Throws ConfigError.
   */
  resolve(
    flags: Readonly<Record<string, unknown>>,
    env: Readonly<Record<string, string | undefined>>,
    io?: LoadConfigIo,
    check?: (r: Resolved<Specs>, issues: IssueList, option: (name: keyof Specs) => OptionDefinition) => void,
  ): Resolved<Specs>;
  /** The table as Markdown (the README embeds exactly this). */
  renderMarkdown(): string;
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Commander argument parser for list flags: repeated flags accumulate, each split on commas. */
export function collectList(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...splitList(value)];
}

function helpDefault(d: OptionDefinition['default']): string {
  if (d === undefined) return 'none';
  if (Array.isArray(d)) return d.length === 0 ? 'empty' : d.join(',');
  return String(d);
}

function describeSource(source: ConfigSource, file: string | undefined): string {
  return source === 'file' ? `from config file ${file}` : `from ${source}`;
}

/** Builds a table. `fileOption` names the option whose value is a YAML file of further options. */
export function defineOptions<Specs extends Record<string, OptionSpec>>(
  specs: Specs,
  fileOption?: keyof Specs & string,
): OptionTable<Specs> {
  type Name = keyof Specs & string;
  const options: readonly OptionDefinition<Name>[] = Object.freeze(
    (Object.keys(specs) as Name[]).map((name) => {
      const s = specs[name]!;
      return Object.freeze({
        name,
        flag: `--${kebab(name)}`,
        env: s.env ?? `FERRY_${kebab(name).replaceAll('-', '_').toUpperCase()}`,
        yamlKey: fileOption === undefined || s.yaml === false || name === fileOption ? undefined : name,
        type: s.type,
        default: s.default,
        description: s.required === undefined ? s.description : `${s.description} Required.`,
      });
    }),
  );
  const byName = (name: keyof Specs) => options.find((o) => o.name === name)!;

  function addTo(cmd: Command): Command {
    for (const o of options) {
      const help = `${o.description} [env ${o.env}; default ${helpDefault(o.default)}]`;
      if (o.type === 'bool') {
        cmd.option(`${o.flag} [bool]`, help);
        cmd.option(`--no-${o.flag.slice(2)}`, `Same as ${o.flag}=false.`);
      } else if (o.type === 'list') {
        cmd.option(`${o.flag} <list>`, `${help} (comma-separated, repeatable)`, collectList);
      } else {
        cmd.option(`${o.flag} <value>`, help);
      }
    }
    return cmd;
  }

  function readFile(
    path: string,
    source: ConfigSource,
    issues: IssueList,
    io: LoadConfigIo,
  ): Map<Name, unknown> {
    const byFile = new Map<Name, unknown>();
    let text: string;
    try {
      text = (io.readFile ?? ((p: string) => readFileSync(p, 'utf8')))(path);
    } catch (err) {
      issues.add(
        byName(fileOption!),
        source,
        `cannot read config file ${path}: ${(err as Error).message} (${describeSource(source, undefined)})`,
      );
      return byFile;
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      issues.add(
        undefined,
        'file',
        `cannot parse config file ${path}: ${(err as Error).message.split('\n')[0]}`,
      );
      return byFile;
    }
    if (doc === null || doc === undefined) return byFile;
    if (typeof doc !== 'object' || Array.isArray(doc)) {
      issues.add(undefined, 'file', `config file ${path} must be a YAML mapping of option names to values`);
      return byFile;
    }
    const yamlKeys = options.filter((o) => o.yamlKey !== undefined).map((o) => o.yamlKey!);
    for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
      const o = options.find((x) => x.yamlKey === key);
      if (!o) {
        const hint = suggest(key, yamlKeys);
        issues.add(
          undefined,
          'file',
          `unknown key ${JSON.stringify(key)} in config file ${path}${hint ? ` (did you mean ${hint}?)` : ''}`,
        );
      } else if (value !== undefined) byFile.set(o.name, value);
    }
    return byFile;
  }

  function resolve(
    flags: Readonly<Record<string, unknown>>,
    env: Readonly<Record<string, string | undefined>>,
    io: LoadConfigIo = {},
    check?: (r: Resolved<Specs>, issues: IssueList, option: (name: keyof Specs) => OptionDefinition) => void,
  ): Resolved<Specs> {
    const issues = new IssueList();
    const byFlag = new Map<Name, unknown>();
    const byEnv = new Map<Name, unknown>();
    for (const o of options) {
      const f = flags[o.name];
      // Lists given as several flags: join them so each item is split on commas.
      if (f !== undefined) byFlag.set(o.name, o.type === 'list' && Array.isArray(f) ? f.join(',') : f);
      const e = env[o.env];
      if (e !== undefined && e !== '') byEnv.set(o.name, e);
    }
    let byFile = new Map<Name, unknown>();
    let filePath: string | undefined;
    if (fileOption !== undefined) {
      const given = byFlag.get(fileOption) ?? byEnv.get(fileOption);
      if (typeof given === 'string' && given.trim() !== '') {
        filePath = given.trim();
        byFile = readFile(filePath, byFlag.has(fileOption) ? 'flag' : 'env', issues, io);
      }
    }

    // Validate every given value (a bad value is an error even where a higher source overrides it).
    const values: Record<string, unknown> = {};
    const sources: Record<string, ConfigSource> = {};
    const raw: Record<string, unknown> = {};
    for (const o of options) {
      const s = specs[o.name]!;
      const candidates: [ConfigSource, unknown][] = [];
      if (byFlag.has(o.name)) candidates.push(['flag', byFlag.get(o.name)]);
      if (byEnv.has(o.name)) candidates.push(['env', byEnv.get(o.name)]);
      if (byFile.has(o.name)) candidates.push(['file', byFile.get(o.name)]);
      const fallback = s.fallbackEnv === undefined ? undefined : env[s.fallbackEnv];
      if (candidates.length === 0 && fallback) candidates.push(['env', fallback]);
      let chosen = false;
      for (const [source, value] of candidates) {
        const r = s.schema.safeParse(value);
        if (!r.success) {
          for (const issue of r.error.issues)
            issues.add(o, source, `${issue.message} (${describeSource(source, filePath)})`);
        } else if (!chosen) {
          values[o.name] = r.data;
          sources[o.name] = source;
          raw[o.name] = value;
          chosen = true;
        }
      }
      if (!chosen) {
        sources[o.name] = 'default';
        const r = s.schema.safeParse(s.default);
        if (!r.success) throw new Error(`bug: default of ${o.name} does not validate: ${r.error.message}`);
        values[o.name] = r.data;
      }
      if (
        s.required !== undefined &&
        (values[o.name] === undefined || values[o.name] === '') &&
        !issues.issues.some((i) => i.field === o.name)
      )
        issues.add(o, sources[o.name], `required ${s.required}`);
    }
    const resolved = {
      values: values as OptionValues<Specs>,
      sources: Object.freeze(sources) as Record<keyof Specs, ConfigSource>,
      raw: Object.freeze(raw) as Partial<Record<keyof Specs, unknown>>,
    };
    if (check && issues.issues.length === 0) check(resolved, issues, byName);
    issues.throwIfAny();
    return resolved;
  }

  function renderMarkdown(): string {
    const esc = (s: string) => s.replaceAll('|', '\\|');
    const withYaml = fileOption !== undefined;
    const rows = options.map((o) => {
      const d =
        o.default === undefined
          ? '—'
          : Array.isArray(o.default)
            ? o.default.length === 0
              ? '`[]`'
              : `\`${o.default.join(',')}\``
            : `\`${String(o.default)}\``;
      const yaml = withYaml ? ` ${o.yamlKey ? `\`${o.yamlKey}\`` : '—'} |` : '';
      return `| \`${o.flag}\` | \`${o.env}\` |${yaml} ${o.type} | ${d} | ${esc(o.description)} |`;
    });
    return [
      `| flag | env |${withYaml ? ' YAML key |' : ''} type | default | description |`,
      `|---|---|${withYaml ? '---|' : ''}---|---|---|`,
      ...rows,
    ].join('\n');
  }

  return { options, addTo, resolve, renderMarkdown };
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
