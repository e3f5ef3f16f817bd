import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';

/** Something a test context offers to clean up after a test (node:test's `t`, or a suite). */
export interface Cleanup {
  after(fn: () => unknown): void;
}

const children = new Set<ChildProcess>();
// Safety net: whatever way the test process ends normally, its daemons go with it.
process.once('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

export interface Daemon {
  readonly pid: number | undefined;
  readonly logFile: string;
  /** True until the process exited. */
  running(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs` (default 10000). Resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
  /** Exit code once exited (null when killed by a signal or still running). */
  exitCode(): number | null;
  /** Last `bytes` of the log file. */
  logs(bytes?: number): string;
}

/** Spawns `cmd args` with stdout and stderr appended to `logFile`. */
export function spawnDaemon(cmd: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): Daemon {
  const fd = openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: env ?? process.env });
  children.add(child);
  let exited = false;
  const exitP = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      children.delete(child);
      resolve();
    });
    child.once('error', () => {
      exited = true;
      children.delete(child);
      resolve();
    });
  });
  return {
    pid: child.pid,
    logFile,
    running: () => !exited,
    exitCode: () => child.exitCode,
    async stop(graceMs = 10_000) {
      if (exited) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exitP;
      clearTimeout(t);
    },
    logs(bytes = 8000) {
      try {
        const s = readFileSync(logFile, 'utf8');
        return s.slice(-bytes);
      } catch {
        return '';
      }
    },
  };
}
