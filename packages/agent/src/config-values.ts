/**
 * Value parsers and the zod schema of each option type (agent and `ferry pinner`). Input is whatever a
 * source gives: a string (flag, env) or a YAML value. Messages complete "expected …" and never carry
 * more of the input than the value itself.
 */
import { isIP } from 'node:net';
import type { TagMode } from '@ferry/interface';
import { endpointsOf, normalizeRegistry } from '@ferry/oci';
import { isTagMode, parseTagRule, TAG_MODES, type TagRule } from '@ferry/registry';
import { z } from 'zod';
import { isWildcardRegistry, parseRegistryUrl } from './registry-url.ts';

/** A listen address. `host` is '' for "all interfaces" (`:5000`); IPv6 hosts are stored without brackets. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** Thrown by the value parsers; the message completes "expected …". */
export class ValueError extends Error {}

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

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
  ki: 2 ** 10,
  mi: 2 ** 20,
  gi: 2 ** 30,
  ti: 2 ** 40,
};

/** Parses a byte size: `1000000`, `512Mi`, `2Gi`, `10G` (Kubernetes quantity suffixes). */
export function parseSize(input: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?)?$/i.exec(input.trim());
  const unit = SIZE_UNITS[(m?.[2] ?? '').toLowerCase()];
  if (!m || unit === undefined)
    throw new ValueError(`expected a size like 2Gi or 500M, got ${JSON.stringify(input)}`);
  const n = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n))
    throw new ValueError(`expected a size below 8 PiB, got ${JSON.stringify(input)}`);
  return n;
}

/** Formats bytes as a size parseSize reads back (`2Gi`, `512Mi`, or plain bytes). */
export function formatSize(n: number): string {
  for (const [unit, size] of [
    ['Ti', 2 ** 40],
    ['Gi', 2 ** 30],
    ['Mi', 2 ** 20],
    ['Ki', 2 ** 10],
  ] as const) {
    if (n > 0 && n % size === 0) return `${n / size}${unit}`;
  }
  return String(n);
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

/** Splits a comma-separated list; blanks are dropped. */
export function splitList(input: string): string[] {
  return input
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

// ---------------------------------------------------------------------------------------------------
// Schemas

/** A string parsed by `parse` (which throws ValueError); a ValueError becomes the zod issue. */
function fromString<T>(expected: string, parse: (s: string) => T): z.ZodType<T, unknown> {
  return z.unknown().transform(
    parsedBy((v): T => {
      if (typeof v !== 'string') throw new ValueError(`expected ${expected}, got ${JSON.stringify(v)}`);
      return parse(v);
    }),
  );
}

/** A zod transform from a parser that throws ValueError: its message becomes the issue. */
function parsedBy<I, T>(parse: (v: I) => T) {
  return (v: I, ctx: z.RefinementCtx<I>): T => {
    try {
      return parse(v);
    } catch (err) {
      if (!(err instanceof ValueError)) throw err;
      ctx.addIssue({ code: 'custom', message: err.message });
      return z.NEVER;
    }
  };
}

/** Like fromString, but undefined/null (no default) and '' give undefined. */
function optional<T>(expected: string, parse: (s: string) => T): z.ZodType<T | undefined, unknown> {
  return z
    .union([z.undefined(), z.null().transform(() => undefined), fromString(expected, parse)])
    .transform((v) => (v === '' ? undefined : v)) as z.ZodType<T | undefined, unknown>;
}

/** One of `values`, case-insensitive. */
function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  const error = (iss: { input: unknown }) =>
    `expected one of ${values.join(', ')}, got ${JSON.stringify(iss.input)}`;
  return z.string({ error }).trim().toLowerCase().pipe(z.enum(values, { error }));
}

/** A list: comma-separated string (flags, env) or a YAML array of strings; items parsed by `item`. */
export function listOf<T>(item: (s: string) => T): z.ZodType<readonly T[], unknown> {
  const items = z.union(
    [z.string().transform(splitList), z.array(z.string().trim()).transform((a) => a.filter((x) => x !== ''))],
    {
      error: (iss) =>
        `expected a list (comma-separated, or a YAML array of strings), got ${JSON.stringify(iss.input)}`,
    },
  );
  return items.pipe(fromListItems(item));
}

function fromListItems<T>(item: (s: string) => T): z.ZodType<readonly T[], string[]> {
  return z.array(z.string()).transform(parsedBy((list): readonly T[] => Object.freeze(list.map(item))));
}

export const addressSchema = fromString('an address like :5000', (s) => Object.freeze(parseAddress(s)));
export const durationSchema = fromString('a duration like 20ms', parseDuration);
export const sizeSchema = z.union(
  [z.number().int().nonnegative(), fromString('a size like 2Gi', parseSize)],
  {
    error: (iss) => `expected a size like 2Gi or 500M, got ${JSON.stringify(iss.input)}`,
  },
);
export const boolSchema = z.union(
  [z.boolean(), z.stringbool({ truthy: ['true', '1', 'yes', 'on'], falsy: ['false', '0', 'no', 'off'] })],
  { error: (iss) => `expected true or false, got ${JSON.stringify(iss.input)}` },
);
export const pathSchema = fromString('a path', (s) => {
  if (s.trim() === '') throw new ValueError('expected a path, got an empty value');
  return s.trim();
});
/** A path where '' means "none". */
export const optionalPathSchema = optional('a path', (s) => s.trim());
/** A string where '' means "none". */
export const optionalStringSchema = optional('a string', (s) => s.trim());
export const stringSchema = fromString('a string', (s) => {
  if (s.trim() === '') throw new ValueError('expected a non-empty string');
  return s.trim();
});
export function intSchema(min: number, max: number) {
  const range = `an integer between ${min} and ${max}`;
  const error = (iss: { input: unknown }) => `expected ${range}, got ${JSON.stringify(iss.input)}`;
  return z
    .union(
      [
        z.number(),
        z
          .string()
          .trim()
          .regex(/^-?\d+$/)
          .transform(Number),
      ],
      { error },
    )
    .pipe(z.number().int({ error }).min(min, { error }).max(max, { error }));
}
export const hostSchema = optional('a host name or IP address', (s) => checkHost(s.trim(), s));

/** An http(s) URL without trailing slashes; '' means "none". */
export const urlOrEmptySchema = fromString('an http(s) URL', (s) => {
  const v = s.trim();
  if (v === '') return '';
  if (!URL.canParse(v) || !/^https?:$/.test(new URL(v).protocol))
    throw new ValueError(`expected an http(s) URL, got ${JSON.stringify(v)}`);
  return v.replace(/\/+$/, '');
});

/** Log levels pino understands. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
/** One of LOG_LEVELS. */
export type LogLevel = (typeof LOG_LEVELS)[number];
export const logLevelSchema = oneOf(LOG_LEVELS);
export const tagModeSchema: z.ZodType<TagMode, unknown> = oneOf(
  TAG_MODES as readonly TagMode[] as [TagMode, ...TagMode[]],
);

/** A registry in --mirrored-registries: a URL or a bare host; the value kept is the host[:port]. */
function registryItem(s: string): string {
  if (isWildcardRegistry(s)) return '*';
  try {
    return normalizeRegistry(parseRegistryUrl(s, 'mirrored registry').host);
  } catch (err) {
    throw new ValueError((err as Error).message);
  }
}
export const registryListSchema = listOf(registryItem).transform((list): readonly string[] =>
  list.includes('*') ? Object.freeze([]) : Object.freeze([...new Set(list)]),
);

export function regexItem(s: string): string {
  try {
    new RegExp(s);
  } catch (err) {
    const why = (err as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '');
    throw new ValueError(`invalid regular expression ${JSON.stringify(s)}: ${why}`);
  }
  return s;
}
export const regexListSchema = listOf(regexItem);

function tagRule(x: unknown): TagRule {
  if (typeof x === 'string') {
    try {
      return Object.freeze(parseTagRule(x.trim()));
    } catch (err) {
      throw new ValueError((err as Error).message);
    }
  }
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
}

/** Tag rules: `pattern=mode` strings (comma-separated, or a YAML array), or YAML `{pattern, mode}` objects. */
export const tagRuleListSchema: z.ZodType<readonly TagRule[], unknown> = z
  .union([z.string().transform(splitList), z.array(z.unknown())], {
    error: (iss) =>
      `expected a list of pattern=mode rules (comma-separated, or a YAML array), got ${JSON.stringify(iss.input)}`,
  })
  .transform(parsedBy((items: unknown[]): readonly TagRule[] => Object.freeze(items.map(tagRule))));

/**
 * Upstream base URLs from --mirrored-registries: `http://10.0.0.9:5000` → `{ '10.0.0.9:5000':
 * 'http://10.0.0.9:5000' }` (@ferry/oci's `endpointsOf`; docker.io always goes to registry-1.docker.io).
 */
export function upstreamEndpointsOf(registries: unknown): Readonly<Record<string, string>> {
  const items =
    typeof registries === 'string' ? splitList(registries) : Array.isArray(registries) ? registries : [];
  return Object.freeze(endpointsOf(items.filter((i): i is string => typeof i === 'string')));
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
/** One `--local-clients` item, checked: an IP address or `address/prefix`. Returns it trimmed. */
export function localClientItem(s: string): string {
  const v = s.trim();
  const [address = '', prefix, ...rest] = v.split('/');
  const family = isIP(address);
  const max = family === 6 ? 128 : 32;
  const okPrefix = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= max);
  if (family === 0 || !okPrefix || rest.length > 0)
    throw new ValueError(
      `expected an IP address or CIDR like 10.0.0.5 or 10.0.0.0/24, got ${JSON.stringify(v)}`,
    );
  return v;
}

export const localClientListSchema = listOf(localClientItem);

export const peerListSchema = listOf(peerItem);
export const dnsNameListSchema = listOf((s) => {
  parseAddress(s, true);
  return s;
});
