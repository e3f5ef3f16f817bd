import type { Peer, Router } from '@ferry/interface';

/**
 * The providers of one key as the router yields them, each once and at most `max`, handed out one at a
 * time (in the spirit of Spegel's routing iterator). The lookup runs in the background from construction
 * until `max` peers were found, the router ends, or `signal` aborts.
 */
export class PeerIterator {
  /** Every peer found so far, in the order found. */
  readonly found: Peer[] = [];
  /** Time until the router yielded the first peer. */
  resolveMs: number | undefined;
  /** Why the lookup failed, when it did. */
  error: unknown;
  #next = 0;
  #done = false;
  #waiters = new Set<() => void>();
  #stop = new AbortController();

  constructor(router: Router, key: string, max: number, signal: AbortSignal) {
    const t0 = performance.now();
    const lookupSignal = AbortSignal.any([signal, this.#stop.signal]);
    void (async () => {
      try {
        for await (const peer of router.lookup(key, { signal: lookupSignal })) {
          this.resolveMs ??= performance.now() - t0;
          if (!this.found.some((p) => p.id === peer.id)) this.found.push(peer);
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
    return this.#done && this.#next >= this.found.length;
  }

  /**
   * The next peer, waiting for the router until `until` aborts. undefined when exhausted or at the
   * deadline; a peer that arrives after the deadline stays for the next call.
   */
  async next(until: AbortSignal): Promise<Peer | undefined> {
    for (;;) {
      if (this.#next < this.found.length) return this.found[this.#next++];
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

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}
