import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A private address block `127.<a>.<b>.0/24` for one test file (or one part of it).
 * Nodes live at `.11`, `.12`, … (`node(1)` = `.11`); the upstream registry at `.2`.
 * Because every block has its own addresses, all daemons can use the same well-known ports.
 */
export interface AddressBlock {
  /** `127.<a>.<b>` */
  prefix: string;
  /** Address of node i (1-based): `127.<a>.<b>.<10+i>`. */
  node(i: number): string;
  /** Address for the upstream registry: `127.<a>.<b>.2`. */
  upstream: string;
  /** Any other host number in the block (1..254). */
  host(n: number): string;
  /** Releases the block's lock file (also done at process exit). */
  release(): void;
}

const lockDir = join(tmpdir(), 'ferry-rig-net');
const held = new Set<string>();
let counter = 0;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tryLock(file: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      held.add(file);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(owner) && owner > 0 && pidAlive(owner)) return false;
      rmSync(file, { force: true }); // stale lock of a dead process: take it over
    }
  }
  return false;
}

process.once('exit', () => {
  for (const f of held) rmSync(f, { force: true });
});

/**
 * Allocates a block nobody else on this machine holds. The candidate is derived from the process id
 * and a per-process counter, `n = (pid * 16 + counter) mod 62500`, `a = 1 + n / 250`, `b = n mod 250`
 * (never `127.0.x.x`); a lock file `/tmp/ferry-rig-net/<a>.<b>` (holding the pid) makes the choice
 * exclusive across concurrent test processes, and the next candidate is tried when it is taken.
 */
export function allocateBlock(): AddressBlock {
  mkdirSync(lockDir, { recursive: true });
  for (let tries = 0; tries < 62500; tries++) {
    const n = (process.pid * 16 + counter++) % 62500;
    const a = 1 + Math.floor(n / 250);
    const b = n % 250;
    const file = join(lockDir, `${a}.${b}`);
    if (!tryLock(file)) continue;
    const prefix = `127.${a}.${b}`;
    return {
      prefix,
      node: (i) => `${prefix}.${10 + i}`,
      upstream: `${prefix}.2`,
      host: (h) => `${prefix}.${h}`,
      release() {
        held.delete(file);
        rmSync(file, { force: true });
      },
    };
  }
  throw new Error('no free 127.x.y.0/24 block');
}

export interface WaitOptions {
  /** Give up after this many ms (default 10000). */
  timeoutMs?: number;
  /** Poll period in ms (default 50). */
  intervalMs?: number;
  /** Names what is awaited in the timeout error. */
  what?: string;
}

/**
 * Polls `fn` until it returns a value other than undefined/false/null, and returns that value.
 * Exceptions count as "not yet"; the last one is attached to the timeout error.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: WaitOptions = {},
): Promise<Exclude<T, undefined | false | null>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false && v !== null) return v as Exclude<T, undefined | false | null>;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      const why = lastErr instanceof Error ? `: ${lastErr.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${why}`, {
        cause: lastErr,
      });
    }
    await sleep(intervalMs);
  }
}

/** Resolves once a TCP connect to host:port succeeds. */
export function waitForPort(host: string, port: number, opts: WaitOptions = {}): Promise<true> {
  return waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect({ host, port });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    { what: `${host}:${port}`, ...opts },
  );
}
