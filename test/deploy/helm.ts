/**
 * A small renderer for the subset of Helm's template language that Ferry's chart uses, so the chart can
 * be checked where Helm cannot run. It is a test tool, not a Helm replacement: anything outside the
 * subset is an error (so the chart cannot drift into syntax the checks would not understand).
 *
 * Supported: text/template actions (`{{ }}`, `{{- -}}` trimming, comments), pipelines with `|`,
 * parentheses, variables (`$x :=`, `$x =`, `$`, `$k, $v :=` in range), `if / else if / else`, `with`,
 * `range` (lists and maps, with else), `define` / `include` / `template`; Helm's objects (`.Values`,
 * `.Release`, `.Chart`, `.Capabilities.APIVersions.Has`, `.Files.Get`, `.Template`); and the sprig
 * functions listed in FUNCS. `genCA` / `genSignedCert` return placeholder PEM text (the checks look at
 * where certificates go, not at their bytes); `lookup` returns an empty map, as `helm template` does.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';

// ---------------------------------------------------------------------------------------------------
// Lexing: text and actions

interface TextToken {
  t: 'text';
  s: string;
}
interface ActionToken {
  t: 'action';
  s: string;
  pos: number;
}
type Token = TextToken | ActionToken;

function lex(src: string, name: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    let text = open < 0 ? src.slice(i) : src.slice(i, open);
    if (trimNext) text = text.replace(/^\s+/, '');
    trimNext = false;
    if (open < 0) {
      if (text) out.push({ t: 'text', s: text });
      break;
    }
    const trimLeft = src.startsWith('{{- ', open) || src.startsWith('{{-\n', open);
    if (trimLeft) text = text.replace(/\s+$/, '');
    if (text) out.push({ t: 'text', s: text });
    let start = open + (trimLeft ? 3 : 2);
    // Comments may contain "}}" only at their end: {{/* … */}}.
    const isComment = src.slice(start).trimStart().startsWith('/*');
    let close: number;
    if (isComment) {
      const end = src.indexOf('*/', start);
      if (end < 0) throw new TemplateError(name, open, 'unclosed comment');
      close = src.indexOf('}}', end);
    } else {
      close = findClose(src, start);
    }
    if (close < 0) throw new TemplateError(name, open, 'unclosed action');
    let end = close;
    if (src[close - 1] === '-' && /\s/.test(src[close - 2] ?? '')) {
      trimNext = true;
      end = close - 1;
    }
    if (!isComment) out.push({ t: 'action', s: src.slice(start, end).trim(), pos: open });
    start = close + 2;
    i = start;
  }
  return out;
}

/** The index of the `}}` closing an action, skipping string literals. */
function findClose(src: string, from: number): number {
  let i = from;
  while (i < src.length) {
    const c = src[i];
    if (c === '"') {
      i++;
      while (i < src.length && src[i] !== '"') i += src[i] === '\\' ? 2 : 1;
    } else if (c === '`') {
      i = src.indexOf('`', i + 1);
      if (i < 0) return -1;
    } else if (c === '}' && src[i + 1] === '}') return i;
    i++;
  }
  return -1;
}

export class TemplateError extends Error {
  constructor(template: string, pos: number, message: string) {
    super(`${template}${pos >= 0 ? ` (offset ${pos})` : ''}: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Parsing actions into pipelines

type Operand =
  | { k: 'field'; base: 'dot' | string; path: string[] } // base: 'dot' or a variable name ('$' for root)
  | { k: 'lit'; v: unknown }
  | { k: 'ident'; name: string }
  | { k: 'paren'; pipe: Pipeline };
interface Command {
  ops: Operand[];
}
interface Pipeline {
  decl: string[];
  assign: boolean;
  cmds: Command[];
}

type Node =
  | { n: 'text'; s: string }
  | { n: 'action'; pipe: Pipeline; pos: number }
  | { n: 'if' | 'with'; pipe: Pipeline; body: Node[]; alt: Node[] }
  | { n: 'range'; pipe: Pipeline; body: Node[]; alt: Node[] }
  | { n: 'template'; name: string; pipe: Pipeline | undefined };

function tokenizeAction(s: string, where: () => string): string[] {
  const toks: string[] = [];
  const re =
    /\s*("(?:[^"\\]|\\.)*"|`[^`]*`|:=|[|(),=]|-?\d+(?:\.\d+)?|\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*|\.(?:[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)?|[A-Za-z_][A-Za-z0-9_]*)/y;
  let i = 0;
  while (i < s.length) {
    if (/^\s*$/.test(s.slice(i))) break;
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) throw new Error(`${where()}: cannot read ${JSON.stringify(s.slice(i))}`);
    toks.push(m[1]!);
    i = re.lastIndex;
  }
  return toks;
}

function parsePipeline(toks: string[], where: () => string): Pipeline {
  let pos = 0;
  const decl: string[] = [];
  let assign = false;
  // Declarations: $x := …, $k, $v := …, $x = …
  const declEnd = toks.findIndex((t) => t === ':=' || t === '=');
  if (declEnd > 0 && toks.slice(0, declEnd).every((t) => t.startsWith('$') || t === ',')) {
    for (const t of toks.slice(0, declEnd)) if (t !== ',') decl.push(t);
    assign = toks[declEnd] === '=';
    pos = declEnd + 1;
  }
  const parseCmds = (stopAtParen: boolean): Command[] => {
    const cmds: Command[] = [{ ops: [] }];
    while (pos < toks.length) {
      const t = toks[pos]!;
      if (t === ')') {
        if (!stopAtParen) throw new Error(`${where()}: unexpected )`);
        return cmds;
      }
      pos++;
      if (t === '|') {
        cmds.push({ ops: [] });
        continue;
      }
      const cur = cmds[cmds.length - 1]!;
      if (t === '(') {
        const inner = parseCmds(true);
        if (toks[pos] !== ')') throw new Error(`${where()}: missing )`);
        pos++;
        cur.ops.push({ k: 'paren', pipe: { decl: [], assign: false, cmds: inner } });
      } else cur.ops.push(operand(t, where));
    }
    if (stopAtParen) throw new Error(`${where()}: missing )`);
    return cmds;
  };
  const cmds = parseCmds(false);
  if (cmds.some((c) => c.ops.length === 0)) throw new Error(`${where()}: empty command in pipeline`);
  return { decl, assign, cmds };
}

function operand(t: string, where: () => string): Operand {
  if (t.startsWith('"')) return { k: 'lit', v: JSON.parse(t) };
  if (t.startsWith('`')) return { k: 'lit', v: t.slice(1, -1) };
  if (/^-?\d/.test(t)) return { k: 'lit', v: Number(t) };
  if (t === 'true' || t === 'false') return { k: 'lit', v: t === 'true' };
  if (t === 'nil') return { k: 'lit', v: null };
  if (t === '.') return { k: 'field', base: 'dot', path: [] };
  if (t.startsWith('.')) return { k: 'field', base: 'dot', path: t.slice(1).split('.') };
  if (t.startsWith('$')) {
    const [v, ...path] = t.split('.');
    return { k: 'field', base: v!, path };
  }
  if (/^[A-Za-z_]\w*$/.test(t)) return { k: 'ident', name: t };
  throw new Error(`${where()}: unexpected ${t}`);
}

interface Parsed {
  nodes: Node[];
  defines: Map<string, Node[]>;
}

function parseTemplate(src: string, name: string): Parsed {
  const tokens = lex(src, name);
  const defines = new Map<string, Node[]>();
  let i = 0;
  const where = (pos: number) => () => `${name} (offset ${pos})`;
  /** Parses until one of `stops` (an action keyword); returns the nodes and the stop action. */
  const parseList = (stops: string[]): { nodes: Node[]; stop: string; rest: string } => {
    const nodes: Node[] = [];
    while (i < tokens.length) {
      const tok = tokens[i++]!;
      if (tok.t === 'text') {
        nodes.push({ n: 'text', s: tok.s });
        continue;
      }
      const w = where(tok.pos);
      const m = /^(\w+)\b\s*([\s\S]*)$/.exec(tok.s);
      const kw = m?.[1] ?? '';
      const rest = m?.[2] ?? '';
      if (stops.includes(kw)) return { nodes, stop: kw, rest };
      if (kw === 'if' || kw === 'with' || kw === 'range') {
        nodes.push(parseBlock(kw, rest, w));
      } else if (kw === 'define') {
        const dname = JSON.parse(rest.trim()) as string;
        const body = parseList(['end']);
        if (body.stop !== 'end') throw new Error(`${w()}: define ${dname} has no end`);
        defines.set(dname, body.nodes);
      } else if (kw === 'template') {
        const toks = tokenizeAction(rest, w);
        const tname = JSON.parse(toks[0] ?? '""') as string;
        nodes.push({
          n: 'template',
          name: tname,
          pipe: toks.length > 1 ? parsePipeline(toks.slice(1), w) : undefined,
        });
      } else if (['else', 'end', 'block', 'break', 'continue'].includes(kw)) {
        throw new Error(`${w()}: unexpected {{ ${kw} }}`);
      } else {
        nodes.push({ n: 'action', pipe: parsePipeline(tokenizeAction(tok.s, w), w), pos: tok.pos });
      }
    }
    if (stops.length > 0) throw new Error(`${name}: missing {{ end }}`);
    return { nodes, stop: '', rest: '' };
  };
  const parseBlock = (kw: 'if' | 'with' | 'range', cond: string, w: () => string): Node => {
    const pipe = parsePipeline(tokenizeAction(cond, w), w);
    const body = parseList(['else', 'end']);
    let alt: Node[] = [];
    if (body.stop === 'else') {
      const chained = /^(if|with)\b\s*([\s\S]*)$/.exec(body.rest);
      if (chained) {
        // `else if` / `else with`: a nested block that consumes the shared {{ end }}.
        alt = [parseBlock(chained[1] as 'if' | 'with', chained[2]!, w)];
      } else {
        const e = parseList(['end']);
        alt = e.nodes;
      }
    }
    return { n: kw, pipe, body: body.nodes, alt };
  };
  const { nodes } = parseList([]);
  return { nodes, defines };
}

// ---------------------------------------------------------------------------------------------------
// Evaluation

type Scope = Map<string, unknown>[];

/** Go template truth: false, 0, nil, empty string/list/map are false. */
export function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

function toText(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(toText).join(' ')}]`;
  if (typeof v === 'object') {
    return `map[${Object.keys(v)
      .sort()
      .map((k) => `${k}:${toText((v as Record<string, unknown>)[k])}`)
      .join(' ')}]`;
  }
  return String(v);
}

function goQuote(s: string): string {
  return JSON.stringify(s);
}

function toYaml(v: unknown): string {
  if (v === undefined || v === null) return 'null';
  return stringify(v, { lineWidth: 0 }).replace(/\n$/, '');
}

function indent(n: number, s: string): string {
  const pad = ' '.repeat(n);
  return pad + s.replaceAll('\n', `\n${pad}`);
}

function placeholderPem(kind: string, cn: string): string {
  const body = Buffer.from(`${kind}:${cn}`).toString('base64');
  return `-----BEGIN ${kind}-----\n${body}\n-----END ${kind}-----\n`;
}

type Fn = (...args: unknown[]) => unknown;

function sprintf(format: string, ...args: unknown[]): string {
  let i = 0;
  return format.replace(/%[sdvq%]/g, (m) => {
    if (m === '%%') return '%';
    const a = args[i++];
    if (m === '%q') return goQuote(toText(a));
    return toText(a);
  });
}

interface Env {
  defines: Map<string, Node[]>;
  funcs: Record<string, Fn>;
  template: string;
}

function execNodes(nodes: Node[], dot: unknown, scope: Scope, env: Env, out: string[]): void {
  for (const node of nodes) {
    switch (node.n) {
      case 'text':
        out.push(node.s);
        break;
      case 'action': {
        const v = evalPipeline(node.pipe, dot, scope, env);
        if (node.pipe.decl.length === 0) out.push(toText(v));
        break;
      }
      case 'if':
      case 'with': {
        scope.push(new Map());
        const v = evalPipeline(node.pipe, dot, scope, env);
        if (truthy(v)) execNodes(node.body, node.n === 'with' ? v : dot, scope, env, out);
        else execNodes(node.alt, dot, scope, env, out);
        scope.pop();
        break;
      }
      case 'range': {
        const decl = node.pipe.decl;
        const v = evalPipeline({ ...node.pipe, decl: [] }, dot, scope, env);
        let entries: [unknown, unknown][];
        if (v === undefined || v === null) entries = [];
        else if (Array.isArray(v)) entries = v.map((x, idx) => [idx, x]);
        else if (typeof v === 'object')
          entries = Object.keys(v)
            .sort()
            .map((k) => [k, (v as Record<string, unknown>)[k]]);
        else if (typeof v === 'number') entries = Array.from({ length: v }, (_, idx) => [idx, idx]);
        else throw new Error(`${env.template}: range over ${typeof v}`);
        if (entries.length === 0) {
          execNodes(node.alt, dot, scope, env, out);
          break;
        }
        for (const [k, x] of entries) {
          const frame = new Map<string, unknown>();
          if (decl.length === 1) frame.set(decl[0]!, x);
          if (decl.length === 2) {
            frame.set(decl[0]!, k);
            frame.set(decl[1]!, x);
          }
          scope.push(frame);
          execNodes(node.body, x, scope, env, out);
          scope.pop();
        }
        break;
      }
      case 'template': {
        const data = node.pipe ? evalPipeline(node.pipe, dot, scope, env) : undefined;
        out.push(runDefine(node.name, data, env));
        break;
      }
    }
  }
}

function runDefine(name: string, data: unknown, env: Env): string {
  const body = env.defines.get(name);
  if (!body) throw new Error(`${env.template}: no template named ${JSON.stringify(name)}`);
  const out: string[] = [];
  execNodes(body, data, [new Map([['$', data]])], env, out);
  return out.join('');
}

function lookupVar(name: string, scope: Scope, env: Env): unknown {
  for (let i = scope.length - 1; i >= 0; i--) if (scope[i]!.has(name)) return scope[i]!.get(name);
  throw new Error(`${env.template}: undefined variable ${name}`);
}

function evalPipeline(p: Pipeline, dot: unknown, scope: Scope, env: Env): unknown {
  let v: unknown;
  let first = true;
  for (const cmd of p.cmds) {
    v = evalCommand(cmd, dot, scope, env, first ? [] : [v]);
    first = false;
  }
  if (p.decl.length === 1) {
    const name = p.decl[0]!;
    if (p.assign) {
      for (let i = scope.length - 1; i >= 0; i--) {
        if (scope[i]!.has(name)) {
          scope[i]!.set(name, v);
          return v;
        }
      }
      throw new Error(`${env.template}: assignment to undeclared ${name}`);
    }
    scope[scope.length - 1]!.set(name, v);
  } else if (p.decl.length > 1) throw new Error(`${env.template}: two variables outside range`);
  return v;
}

function evalCommand(cmd: Command, dot: unknown, scope: Scope, env: Env, piped: unknown[]): unknown {
  const [head, ...rest] = cmd.ops;
  const args = () => [...rest.map((o) => evalOperand(o, dot, scope, env)), ...piped];
  if (head!.k === 'ident') {
    const name = head!.name;
    if (name === 'include' || name === 'template') {
      const [tname, data] = args();
      return runDefine(String(tname), data, env);
    }
    if (name === 'and' || name === 'or') {
      // Short-circuit like Go 1.18+.
      const all = [...rest.map((o) => () => evalOperand(o, dot, scope, env)), ...piped.map((x) => () => x)];
      let last: unknown;
      for (const get of all) {
        last = get();
        if (name === 'and' ? !truthy(last) : truthy(last)) return last;
      }
      return last;
    }
    const fn = env.funcs[name];
    if (!fn) throw new Error(`${env.template}: function ${JSON.stringify(name)} not defined`);
    return fn(...args());
  }
  // A field that is a method (e.g. .Capabilities.APIVersions.Has "x").
  const v = evalOperand(head!, dot, scope, env);
  const a = args();
  if (typeof v === 'function') return (v as Fn)(...a);
  if (a.length > 0) throw new Error(`${env.template}: ${describe(head!)} is not a function`);
  return v;
}

function describe(o: Operand): string {
  if (o.k === 'field') return `${o.base === 'dot' ? '' : o.base}.${o.path.join('.')}`;
  return o.k;
}

function evalOperand(o: Operand, dot: unknown, scope: Scope, env: Env): unknown {
  switch (o.k) {
    case 'lit':
      return o.v;
    case 'paren':
      return evalPipeline(o.pipe, dot, scope, env);
    case 'ident': {
      const fn = env.funcs[o.name];
      if (!fn) throw new Error(`${env.template}: function ${JSON.stringify(o.name)} not defined`);
      return fn();
    }
    case 'field': {
      let v = o.base === 'dot' ? dot : lookupVar(o.base, scope, env);
      for (let i = 0; i < o.path.length; i++) {
        if (v === undefined || v === null) {
          throw new Error(
            `${env.template}: nil pointer evaluating ${describe({ ...o, path: o.path.slice(0, i + 1) })}`,
          );
        }
        if (typeof v !== 'object') {
          throw new Error(`${env.template}: can't evaluate field ${o.path[i]} in ${typeof v}`);
        }
        v = (v as Record<string, unknown>)[o.path[i]!];
      }
      return v;
    }
  }
}

function empty(v: unknown): boolean {
  return !truthy(v);
}

const FUNCS: Record<string, Fn> = {
  default: (def, v) => (empty(v) ? def : v),
  quote: (...a) =>
    a
      .filter((x) => x !== undefined && x !== null)
      .map((x) => goQuote(toText(x)))
      .join(' '),
  squote: (...a) => a.map((x) => `'${toText(x)}'`).join(' '),
  toYaml: (v) => toYaml(v),
  toJson: (v) => JSON.stringify(v ?? null),
  indent: (n, s) => indent(Number(n), toText(s)),
  nindent: (n, s) => `\n${indent(Number(n), toText(s))}`,
  printf: (f, ...a) => sprintf(String(f), ...a),
  print: (...a) => a.map(toText).join(''),
  trunc: (n, s) => toText(s).slice(0, Number(n)),
  trimSuffix: (suf, s) => {
    const t = toText(s);
    return t.endsWith(String(suf)) ? t.slice(0, t.length - String(suf).length) : t;
  },
  trimPrefix: (pre, s) => {
    const t = toText(s);
    return t.startsWith(String(pre)) ? t.slice(String(pre).length) : t;
  },
  replace: (a, b, s) => toText(s).replaceAll(String(a), String(b)),
  lower: (s) => toText(s).toLowerCase(),
  contains: (sub, s) => toText(s).includes(String(sub)),
  hasPrefix: (pre, s) => toText(s).startsWith(String(pre)),
  join: (sep, l) => (Array.isArray(l) ? l.map(toText).join(String(sep)) : toText(l)),
  list: (...a) => a,
  append: (l, x) => [...(Array.isArray(l) ? l : []), x],
  concat: (...ls) => ls.flatMap((l) => (Array.isArray(l) ? l : [])),
  dict: (...a) => {
    const d: Record<string, unknown> = {};
    for (let i = 0; i + 1 < a.length; i += 2) d[String(a[i])] = a[i + 1];
    return d;
  },
  hasKey: (d, k) => typeof d === 'object' && d !== null && Object.hasOwn(d, String(k)),
  eq: (a, ...b) => b.some((x) => x === a),
  ne: (a, b) => a !== b,
  lt: (a, b) => Number(a) < Number(b),
  gt: (a, b) => Number(a) > Number(b),
  not: (v) => !truthy(v),
  empty: (v) => empty(v),
  len: (v) => (Array.isArray(v) || typeof v === 'string' ? v.length : Object.keys(v ?? {}).length),
  ternary: (a, b, c) => (truthy(c) ? a : b),
  required: (msg, v) => {
    if (v === undefined || v === null || v === '') throw new Error(`required: ${String(msg)}`);
    return v;
  },
  fail: (msg) => {
    throw new Error(`fail: ${String(msg)}`);
  },
  toString: (v: unknown) => toText(v),
  int: (v) => Math.trunc(Number(v)),
  b64enc: (s) => Buffer.from(toText(s)).toString('base64'),
  sha256sum: (s) => createHash('sha256').update(toText(s)).digest('hex'),
  genCA: (cn) => ({
    Cert: placeholderPem('CERTIFICATE', String(cn)),
    Key: placeholderPem('RSA PRIVATE KEY', 'ca'),
  }),
  genSignedCert: (cn) => ({
    Cert: placeholderPem('CERTIFICATE', String(cn)),
    Key: placeholderPem('RSA PRIVATE KEY', String(cn)),
  }),
  lookup: () => ({}),
  add: (...a) => a.reduce((x: number, y) => x + Number(y), 0),
  mul: (...a) => a.reduce((x: number, y) => x * Number(y), 1),
  first: (l) => (Array.isArray(l) ? l[0] : undefined),
  index: (v, ...keys) => {
    let cur = v;
    for (const k of keys)
      cur = cur === undefined || cur === null ? undefined : (cur as Record<string, unknown>)[String(k)];
    return cur;
  },
  dir: (p) => posix.dirname(toText(p)),
};

// ---------------------------------------------------------------------------------------------------
// Charts

/** A chart read from disk. */
export interface Chart {
  dir: string;
  meta: { name: string; version: string; appVersion?: string };
  values: Record<string, unknown>;
  /** Template sources by path relative to the chart ('templates/daemonset.yaml'). */
  templates: Map<string, string>;
}

export function loadChart(dir: string): Chart {
  const meta = parseYamlDoc(readFileSync(join(dir, 'Chart.yaml'), 'utf8')) as Chart['meta'];
  const values = (parseYamlDoc(readFileSync(join(dir, 'values.yaml'), 'utf8')) ?? {}) as Record<
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
  return { dir, meta, values, templates };
}

function parseYamlDoc(src: string): unknown {
  const docs = parseAllDocuments(src);
  if (!Array.isArray(docs) || docs.length !== 1) throw new Error('expected one YAML document');
  const doc = docs[0]!;
  if (doc.errors.length > 0) throw new Error(doc.errors.map((e) => e.message).join('; '));
  return doc.toJS();
}

/** Deep merge like Helm's values coalescing: maps merge, everything else replaces; null deletes. */
export function mergeValues(base: unknown, over: unknown): unknown {
  if (over === undefined) return structuredClone(base);
  if (isMap(base) && isMap(over)) {
    const out: Record<string, unknown> = structuredClone(base);
    for (const [k, v] of Object.entries(over)) {
      if (v === null) delete out[k];
      else out[k] = mergeValues(base[k], v);
    }
    return out;
  }
  return structuredClone(over);
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface RenderOptions {
  /** Values merged over values.yaml. */
  values?: Record<string, unknown>;
  releaseName?: string;
  namespace?: string;
  /** API versions the cluster serves (for .Capabilities.APIVersions.Has). */
  apiVersions?: string[];
}

/** Renders every template (not partials `_*.tpl`, not NOTES.txt): path → rendered text. */
export function renderChart(chart: Chart, opts: RenderOptions = {}): Map<string, string> {
  const values = mergeValues(chart.values, opts.values ?? {}) as Record<string, unknown>;
  const apiVersions = new Set(opts.apiVersions ?? ['v1', 'apps/v1', 'batch/v1']);
  const defines = new Map<string, Node[]>();
  const parsed = new Map<string, Parsed>();
  for (const [path, src] of chart.templates) {
    const p = parseTemplate(src, path);
    parsed.set(path, p);
    for (const [k, v] of p.defines) defines.set(k, v);
  }
  const out = new Map<string, string>();
  for (const [path, p] of parsed) {
    const base = path.split('/').pop()!;
    if (base.startsWith('_') || base === 'NOTES.txt') continue;
    const root = {
      Values: values,
      Release: {
        Name: opts.releaseName ?? 'ferry',
        Namespace: opts.namespace ?? 'ferry',
        Service: 'Helm',
        IsInstall: true,
        IsUpgrade: false,
      },
      Chart: { Name: chart.meta.name, Version: chart.meta.version, AppVersion: chart.meta.appVersion },
      Capabilities: {
        APIVersions: { Has: (v: unknown) => apiVersions.has(String(v)) },
        KubeVersion: { Version: 'v1.33.0', Major: '1', Minor: '33' },
      },
      Files: { Get: (name: unknown) => readFileSync(join(chart.dir, String(name)), 'utf8') },
      Template: { Name: `${chart.meta.name}/${path}`, BasePath: `${chart.meta.name}/templates` },
    };
    const env: Env = { defines, funcs: FUNCS, template: path };
    const buf: string[] = [];
    execNodes(p.nodes, root, [new Map([['$', root]])], env, buf);
    out.set(path, buf.join(''));
  }
  return out;
}

/** One Kubernetes object from a rendered chart, with the template it came from. */
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
    if (!isMap(obj)) throw new Error(`${source}: a document is not a mapping`);
    objs.push({ source, obj });
  }
  return objs;
}
