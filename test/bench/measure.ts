/**
 * Measurement helpers for the benchmark: HTTP requests that count the body without keeping it, file reads
 * from the page cache, percentiles, and the agent's resident memory from /proc.
 */
import { execFile, spawn } from 'node:child_process';
import { createReadStream, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, type IncomingHttpHeaders, request } from 'node:http';
import { dirname } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** One HTTP exchange: status, body bytes counted (not kept), time to the response head and to the end. */
export interface Exchange {
  status: number;
  headers: IncomingHttpHeaders;
  bytes: number;
  /** ms from sending the request to the parsed response head (time to first byte). */
  ttfbMs: number;
  /** ms from sending the request to the end of the body. */
  totalMs: number;
}

export interface ExchangeOptions {
  /** A keep-alive agent (one per target keeps the connection warm across sequential requests). */
  agent: Agent;
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  /** Abort the exchange after this many ms (default 120000). */
  timeoutMs?: number;
}

/** A keep-alive agent with at most `sockets` connections. */
export function keepAlive(sockets = 1): Agent {
  return new Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
}

/** Sends one request and reads the body to its end, counting the bytes and discarding them. */
export function exchange(url: string, opts: ExchangeOptions): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request(
      url,
      { method: opts.method ?? 'GET', agent: opts.agent, headers: opts.headers ?? {} },
      (res) => {
        const ttfbMs = performance.now() - t0;
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
        });
        res.once('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            bytes,
            ttfbMs,
            totalMs: performance.now() - t0,
          }),
        );
        res.once('error', reject);
      },
    );
    req.setTimeout(opts.timeoutMs ?? 120_000, () => req.destroy(new Error(`${url}: no answer in time`)));
    req.once('error', reject);
    req.end();
  });
}

/** Reads a file to its end with fs.createReadStream (default 64 KiB chunks), counting the bytes; ms taken. */
export async function readFileTimed(path: string): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  let bytes = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) bytes += chunk.length;
  return { bytes, ms: performance.now() - t0 };
}

/** MB/s (10^6 bytes per second). */
export const mbps = (bytes: number, ms: number): number => bytes / 1e3 / ms;

/** Median (the mean of the two middle values for an even count). */
export function median(xs: number[]): number {
  if (xs.length === 0) throw new Error('median of an empty sample');
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of a non-empty sample. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) throw new Error('percentile of an empty sample');
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

/** Runs `fn` over `items` with at most `n` in flight; results in input order. */
export async function pool<T, R>(
  items: T[],
  n: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/**
 * The pid of the `ferry agent` whose registry listens on `host:port`, found by its command line in /proc
 * (the rig starts it with `--registry-addr=<host>:<port>`).
 */
export function agentPid(host: string, port: number): number {
  const flag = `--registry-addr=${host}:${port}`;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // exited meanwhile
    }
    if (argv.includes('agent') && argv.includes(flag)) return Number(entry);
  }
  throw new Error(`no ferry agent process with ${flag}`);
}

/** VmRSS of a process in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Flushes dirty pages (so one timed pull does not pay for the previous one's writeback). */
export async function syncDisks(): Promise<void> {
  await execFileP('sync');
}

/** `ctr` with its stdout discarded (a fetch of thousands of blobs prints more progress than a buffer holds). */
export function quietCtr(socket: string, args: string[], timeoutMs = 600_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ctr', ['-a', socket, '-n', 'k8s.io', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: timeoutMs,
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr = (stderr + s).slice(-4000);
    });
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      code === 0
        ? resolve()
        : reject(new Error(`ctr ${args.join(' ')} on ${socket}: exit ${code ?? signal}: ${stderr}`)),
    );
  });
}

/** CPU-seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** Bytes as MiB with one decimal, e.g. `112.4 MiB`. */
export const mib = (b: number): string => `${(b / (1024 * 1024)).toFixed(1)} MiB`;

/**
 * Resident memory by kind, from /proc/<pid>/smaps_rollup: `file` is mapped files (the Node binary, shared
 * libraries; the same pages for every process on the node), `anon` is the process's own memory (V8 heap,
 * malloc, stacks).
 */
export function rssSplit(pid: number): { file: number; anon: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  const anon = kb('Anonymous');
  return { file: kb('Rss') - anon, anon };
}

/** An agent's memory and CPU sample (see {@link agentMemory}). */
export interface AgentMemory {
  rss: number;
  /** Resident mapped files (the Node binary, libraries). */
  fileRss: number;
  /** Resident anonymous memory (V8 heap, malloc, stacks). */
  anonRss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  /** V8 heap space -> bytes used (code_space, old_space, …). */
  spaces: Record<string, number>;
  cpu: number;
}

/** An agent's memory and CPU: VmRSS, its split and CPU-seconds from /proc, V8 heap figures from its /metrics. */
export async function agentMemory(opsUrl: string, pid: number): Promise<AgentMemory> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  const spaces: Record<string, number> = {};
  for (const m of text.matchAll(/^nodejs_heap_space_size_used_bytes\{space="([a-z_]+)"\} (\S+)$/gm))
    spaces[m[1]!] = Number(m[2]);
  const split = rssSplit(pid);
  return {
    rss: rssBytes(pid),
    fileRss: split.file,
    anonRss: split.anon,
    heapUsed: gauge('nodejs_heap_size_used_bytes'),
    heapTotal: gauge('nodejs_heap_size_total_bytes'),
    external: gauge('nodejs_external_memory_bytes'),
    spaces,
    cpu: cpuSeconds(pid),
  };
}

/** Writes a results file (creating its directory) and prints it. */
export function writeResults(outFile: string, md: string, log: (msg: string) => void): void {
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, md);
  console.log(`\n${md}`);
  log(`written to ${outFile}`);
}

/**
 * CPU-seconds used so far by this process and every process below it, by command name (`node`,
 * `containerd`, `docker-registry`, …): live descendants from /proc/<pid>/stat, and this process's own
 * time plus that of its children already reaped (short-lived `ctr` runs). The difference of two calls
 * is what a step cost the whole rig.
 */
export function rigCpuSeconds(): Map<string, number> {
  const stats = new Map<number, { ppid: number; comm: string; cpu: number; children: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime, stime, cutime, cstime in clock ticks (USER_HZ 100)
    stats.set(Number(entry), {
      ppid: Number(f[1]),
      comm,
      cpu: (Number(f[11]) + Number(f[12])) / 100,
      children: (Number(f[13]) + Number(f[14])) / 100,
    });
  }
  const out = new Map<string, number>();
  const add = (name: string, s: number) => out.set(name, (out.get(name) ?? 0) + s);
  const self = stats.get(process.pid);
  if (self !== undefined) add('bench (shaping proxy, client) and exited ctr', self.cpu + self.children);
  const below = new Set([process.pid]);
  // /proc lists parents before their children almost always; repeat until nothing is added.
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, s] of stats) {
      if (below.has(pid) || !below.has(s.ppid)) continue;
      below.add(pid);
      // Node names its main thread, and so its process, "MainThread": the agents.
      add(s.comm === 'MainThread' ? 'node (agents)' : s.comm, s.cpu);
      grew = true;
    }
  }
  return out;
}
