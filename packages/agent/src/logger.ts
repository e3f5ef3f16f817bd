/** The agent's logger: pino, JSON lines on stdout, ISO timestamps. */
import { type DestinationStream, type Logger, pino } from 'pino';
import type { LogLevel } from './config.ts';

/** Options of createLogger. */
export interface LoggerOptions {
  /** Minimum level written. Default 'info'. */
  level?: LogLevel;
  /** Fields added to every line (e.g. { node: 'worker-1' }). */
  base?: Record<string, unknown>;
  /** Where lines go. Default: stdout (pino.destination(1)). Tests pass a stream. */
  destination?: DestinationStream;
}

/** Creates the agent's root logger; components use logger.child({ component: '…' }). */
export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      name: 'ferry',
      level: opts.level ?? 'info',
      base: { pid: process.pid, ...opts.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination(1),
  );
}

export type { Logger };
