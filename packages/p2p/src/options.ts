// Option defaults and validation for createP2PNode: every error names the option.
import { lookup as dnsLookup } from 'node:dns/promises';

export const DEFAULTS = {
  provideConcurrency: 64,
  recordValidityMs: 20 * 60_000,
  provideTimeoutMs: 30_000,
  dialTimeoutMs: 5_000,
  bootstrapRetryMs: 1_000,
  /** Deadline of a liveness ping's answer (liveness.ts): a peer silent that long is gone. */
  pingTimeoutMs: 5_000,
  /** Silence from a watched peer (a ring successor, liveness.ts) after which it is pinged. */
  livenessQuietMs: 2_000,
  /** Interval of kad-dht's self query and routing-table refresh (the members protocol keeps the mesh). */
  kadMaintenanceMs: 60 * 60_000,
  bootstrapRetryMaxMs: 30_000,
  /** While ready, keys whose provide failed are retried this often. */
  pendingRetryMs: 10_000,
  /** Housekeeping tick (bootstrap when empty, retry pending provides, refresh). */
  tickMs: 500,
  /** Members up to which every node connects to every other and holds every record (membership.ts). */
  meshLimit: 128,
  /** A member that joined less than this ago may still be sending its records. */
  settleMs: 2_000,
  /** A node below the mesh limit asks a random member for its members this often. */
  gossipMs: 5_000,
  /** Deadline of the direct GET_PROVIDERS round a lookup runs while the local view is incomplete. */
  askPeersMs: 1_000,
  /** Bound for learning a provider's registry port through identify during a lookup. */
  identifyTimeoutMs: 2_000,
};

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`p2p option ${name} must be an integer >= ${min} (got ${String(value)})`);
  }
  return value;
}

export function validPort(name: string, value: number, allowZero: boolean): number {
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1) || value > 65535) {
    throw new Error(`p2p option ${name} must be a port number (got ${String(value)})`);
  }
  return value;
}

export function parseList<T>(name: string, entries: string[] | undefined, parse: (entry: string) => T): T[] {
  return (entries ?? []).map((entry, i) => {
    try {
      return parse(entry);
    } catch (err) {
      throw new Error(`p2p option ${name}[${i}]: ${errorText(err)}`);
    }
  });
}

export async function defaultResolver(name: string): Promise<string[]> {
  const answers = await dnsLookup(name, { all: true });
  return answers.map((a) => a.address);
}
