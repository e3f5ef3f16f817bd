/**
 * In-flight coordination for first-pull sharing, with no coordinator: which node fetches a digest
 * from the upstream, and whom the others follow. Everything goes through DHT provider records:
 * - `ferry-inflight/<digest>`: a node electing (and then feeding a copy) for the digest;
 * - `ferry-copy/<digest>`: a node holding a copy being fed (from the upstream or a peer);
 * - `ferry-fetch/<digest>`: a node feeding its copy from the upstream.
 * The order between nodes is a rank, `sha256(peerId \n digest)`: global, so nobody follows in a cycle.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Peer } from '@ferry/interface';

/** Announces and finds in-flight transfers in the DHT (the p2p node fits). */
export interface InflightDirectory {
  readonly peerId: string;
  advertise(keys: string[]): Promise<void>;
  withdraw(keys: string[]): Promise<void>;
  lookup(key: string, options: { signal: AbortSignal }): AsyncIterable<Peer>;
}

/** Keys announced in the DHT: a node joining an election, a node holding a copy being fed, a node fetching. */
export const electionKey = (digest: string) => `ferry-inflight/${digest}`;
export const copyKey = (digest: string) => `ferry-copy/${digest}`;
export const fetchKey = (digest: string) => `ferry-fetch/${digest}`;

/** Rank of a node for a digest: the lowest fetches. Global, so following never forms a cycle. */
export function rank(peerId: string, digest: string): string {
  return createHash('sha256').update(`${peerId}\n${digest}`).digest('hex');
}

/** Longest wait for the DHT to take an announcement before the election window starts anyway. */
const ANNOUNCE_CAP_MS = 1000;
/** Least time a lookup gets to collect providers. */
const LOOKUP_MS = 3000;
/** Most providers taken from one lookup. */
const MAX_FOUND = 32;
/** A fetcher looks for a lower-ranked fetcher at growing intervals, from the window (at least the min) up to the max. */
const YIELD_CHECK_MIN_MS = 250;
const YIELD_CHECK_MAX_MS = 2000;

type Log = { debug?(o: object, m?: string): void };

/** One node's view of the in-flight records (announce, elect, find, yield). */
export class Inflight {
  private readonly dir: InflightDirectory;
  private readonly windowMs: number;
  private readonly log: Log | undefined;

  constructor(dir: InflightDirectory, windowMs: number, log?: Log) {
    this.dir = dir;
    this.windowMs = windowMs;
    this.log = log;
  }

  get peerId(): string {
    return this.dir.peerId;
  }

  rankOf(digest: string): string {
    return rank(this.dir.peerId, digest);
  }

  /**
   * Joins the election for `digest` and returns the peers to follow, best first; empty: fetch from
   * the upstream. Announces the election key (withdraw it with `withdraw`). Nodes asking at the same
   * moment settle within the window: the lowest rank among those seen fetches. A node arriving late
   * follows a copy (or fetcher) already announced, whatever its rank: such a node follows nobody new.
   */
  async elect(digest: string): Promise<Peer[]> {
    const myRank = this.rankOf(digest);
    const started = performance.now();
    // Announce (so nodes asking at the same moment see us) while looking for copies being fed.
    const [copies0] = await Promise.all([
      this.find(copyKey(digest)),
      withDeadline(this.dir.advertise([electionKey(digest)]), Math.max(this.windowMs, ANNOUNCE_CAP_MS)),
    ]);
    // A copy being fed: follow one (any of them is further along than us).
    if (copies0.length > 0) return this.byRank(copies0, digest);
    // Election: once announced, wait the window; the lowest rank among those seen fetches.
    const announcedMs = performance.now() - started;
    await sleep(this.windowMs);
    const [electors, copies, fetchers] = await Promise.all([
      this.find(electionKey(digest)),
      this.find(copyKey(digest)),
      this.find(fetchKey(digest)),
    ]);
    // A node already fetching (announced while we waited): follow it, whatever its rank. It never
    // follows us: a fetcher only yields to a lower-ranked fetcher.
    if (fetchers.length > 0)
      return this.byRank([...fetchers, ...copies.filter((c) => !has(fetchers, c))], digest);
    // Only lower ranks: nodes deciding at the same moment must never follow each other.
    const seen = [...copies, ...electors.filter((e) => !has(copies, e))];
    const lower = seen.filter((p) => rank(p.id, digest) < myRank);
    this.log?.debug?.(
      {
        digest,
        announcedMs: Math.round(announcedMs),
        seen: seen.map((p) => p.id),
        follow: lower.length > 0,
      },
      'pull-through: election',
    );
    return this.byRank(lower, digest);
  }

  /** Copies still being fed by lower ranks than ours, not in `tried` (a source was lost: no cycles). */
  async lowerCopies(digest: string, tried: Set<string>): Promise<Peer[]> {
    const myRank = this.rankOf(digest);
    const copies = await this.find(copyKey(digest));
    return this.byRank(
      copies.filter((p) => !tried.has(p.id) && rank(p.id, digest) < myRank),
      digest,
    );
  }

  /**
   * While this node fetches `digest` from the upstream: resolves with a lower-ranked fetcher as soon
   * as one is seen (two nodes that decided before seeing each other's records both fetch; the higher
   * yields, so one fetcher is left), or undefined once `signal` aborts. Peers in `exclude` (sources
   * already lost) are passed over.
   */
  async lowerFetcher(digest: string, signal: AbortSignal, exclude: Set<string>): Promise<Peer | undefined> {
    const myRank = this.rankOf(digest);
    let wait = Math.max(this.windowMs, YIELD_CHECK_MIN_MS);
    while (!signal.aborted) {
      try {
        await sleep(wait, undefined, { signal });
      } catch {
        return undefined;
      }
      const lower = (await this.find(fetchKey(digest))).filter(
        (p) => !exclude.has(p.id) && rank(p.id, digest) < myRank,
      );
      if (lower.length > 0 && !signal.aborted) return this.byRank(lower, digest)[0];
      wait = Math.min(Math.round(wait * 1.5), YIELD_CHECK_MAX_MS);
    }
    return undefined;
  }

  advertise(keys: string[]): void {
    void this.dir.advertise(keys).catch(() => {});
  }

  withdraw(keys: string[]): void {
    if (keys.length > 0) void this.dir.withdraw(keys).catch(() => {});
  }

  private byRank(peers: Peer[], digest: string): Peer[] {
    return peers
      .map((p) => ({ p, r: rank(p.id, digest) }))
      .sort((a, b) => (a.r < b.r ? -1 : a.r > b.r ? 1 : 0))
      .map((x) => x.p);
  }

  /**
   * Peers providing `key` (not us). A directory that holds every record (a cluster within the mesh)
   * answers at once; beyond it the lookup asks the DHT, which takes round trips: it gets up to
   * LOOKUP_MS (at least the window), or nodes asking at once would not see each other.
   */
  private async find(key: string): Promise<Peer[]> {
    const out: Peer[] = [];
    const signal = AbortSignal.timeout(Math.max(this.windowMs, LOOKUP_MS));
    try {
      for await (const p of this.dir.lookup(key, { signal })) {
        if (p.id !== this.dir.peerId && !has(out, p)) out.push(p);
        if (out.length >= MAX_FOUND) break;
      }
    } catch {
      // A failed lookup is an empty one.
    }
    return out;
  }
}

const has = (list: Peer[], p: Peer) => list.some((o) => o.id === p.id);

async function withDeadline(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}
