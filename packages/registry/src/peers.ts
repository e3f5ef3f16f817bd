import type { Peer, Router } from '@ferry/interface';

/** How the providers of a key are ordered: some never (quarantined), some last (failed lately). */
export interface PeerOrder {
  skip?(peer: Peer): boolean;
  last?(peer: Peer): boolean;
  /** Pick at random among the peers found (default true); false keeps the router's order. */
  random?: boolean;
}

/**
 * The providers of one key as the router yields them, each once and at most `max`, handed out one at a
 * time in random order, peers that failed lately last (in the spirit of Spegel's routing iterator). The lookup runs in the background from construction
 * until `max` peers were found, the router ends, or `signal` aborts.
 */
export class PeerIterator {
  /** Every peer found so far, in the order found. */
  readonly found: Peer[] = [];
  /** Time until the router yielded the first peer. */
  resolveMs: number | undefined;
  /** Why the lookup failed, when it did. */
  error: unknown;
  #given = new Set<string>();
  #done = false;
  #waiters = new Set<() => void>();
  #stop = new AbortController();

  readonly #order: PeerOrder = {};

  constructor(router: Router, key: string, max: number, signal: AbortSignal, order: PeerOrder = {}) {
    this.#order = order; // before the lookup starts
    const t0 = performance.now();
    const lookupSignal = AbortSignal.any([signal, this.#stop.signal]);
    void (async () => {
      try {
        for await (const peer of router.lookup(key, { signal: lookupSignal })) {
          this.resolveMs ??= performance.now() - t0;
          if (!this.found.some((p) => p.id === peer.id) && this.#order.skip?.(peer) !== true)
            this.found.push(peer);
          this.#wake();
          if (this.found.length >= max) break;
        }
      } catch (err) {
        if (!lookupSignal.aborted) this.error = err;
      } finally {
        this.#done = true;
        this.#wake();
      }
    })();
  }

  /** True when the lookup has ended and every peer it found was handed out. */
  get exhausted(): boolean {
    return this.#done && this.#given.size >= this.found.length;
  }

  /**
   * The next peer, waiting for the router until `until` aborts. undefined when exhausted or at the
   * deadline; a peer that arrives after the deadline stays for the next call.
   */
  async next(until: AbortSignal): Promise<Peer | undefined> {
    for (;;) {
      const peer = this.#pick(this.#done || until.aborted);
      if (peer !== undefined) {
        this.#given.add(peer.id);
        return peer;
      }
      if (this.#done || until.aborted) return undefined;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#waiters.delete(wake);
          until.removeEventListener('abort', wake);
          resolve();
        };
        this.#waiters.add(wake);
        until.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Stops the lookup. */
  close(): void {
    this.#stop.abort();
  }

  /**
   * A random peer among those not handed out yet, so that no peer id decides the order; peers that
   * failed lately only when no other is left (`allowLast`: the lookup is over or the wait is).
   */
  #pick(allowLast: boolean): Peer | undefined {
    const open = this.found.filter((p) => !this.#given.has(p.id));
    const fresh = open.filter((p) => this.#order.last?.(p) !== true);
    const pool = fresh.length > 0 ? fresh : allowLast ? open : [];
    return pool[this.#order.random === false ? 0 : Math.floor(Math.random() * pool.length)];
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}

/** A router that yields `first` (peers known to hold the key), then the router's other providers. */
export function preferring(first: Peer[], router: Router): Router {
  return {
    async *lookup(key, options) {
      for (const p of first) {
        if (options.signal.aborted) return;
        yield p;
      }
      for await (const p of router.lookup(key, options)) if (!first.some((f) => f.id === p.id)) yield p;
    },
  };
}
