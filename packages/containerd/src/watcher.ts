import { setTimeout as sleep } from 'node:timers/promises';
import type { ContainerdClient, ContainerdEvent } from './types.ts';

/** Why the caller should re-list images and content now. */
export type ResyncReason = 'start' | 'reconnect' | 'timer';

/** Options of {@link createWatcher}. */
export interface WatcherOptions {
  /** Stops the watcher (same as `stop()`). */
  signal: AbortSignal;
  /** Period of `onResync('timer')` while connected, in ms. Default 300000 (5 min). */
  resyncIntervalMs?: number;
  /** Re-subscribe back-off: starts at initialMs, doubles per failed attempt up to maxMs. Default 250 / 10000. */
  backoff?: { initialMs: number; maxMs: number };
  /** Subscribe filters. Default: `topic~="/images/"` and `topic~="/content/"`, each limited to the client's namespace. */
  filters?: string[];
  /** Every decoded event, in order. */
  onEvent(e: ContainerdEvent): void;
  /**
   * Called after every successful (re)subscribe and on the timer: re-list then, because containerd
   * replays no events missed while disconnected and GC publishes none.
   */
  onResync(reason: ResyncReason): void;
  /** Stream or subscribe failures (the watcher keeps retrying); also exceptions thrown by the callbacks. */
  onError?(err: unknown): void;
}

export interface Watcher {
  stop(): void;
  /** True while a subscription is live. */
  connected(): boolean;
}

/** Default filters: image and content events in `namespace`. */
export function defaultFilters(namespace: string): string[] {
  return [`topic~="/images/",namespace==${namespace}`, `topic~="/content/",namespace==${namespace}`];
}

/**
 * Keeps one Events.Subscribe stream open, re-subscribing with exponential back-off when it breaks.
 * A subscription counts as live once a Version round trip on the same channel succeeds after the
 * Subscribe call was sent (containerd sends no response headers before the first event).
 */
export function createWatcher(client: ContainerdClient, opts: WatcherOptions): Watcher {
  const ac = new AbortController();
  const signal = AbortSignal.any([ac.signal, opts.signal]);
  const initialMs = opts.backoff?.initialMs ?? 250;
  const maxMs = opts.backoff?.maxMs ?? 10_000;
  const filters = opts.filters ?? defaultFilters(client.namespace);
  const intervalMs = opts.resyncIntervalMs ?? 300_000;
  let live = false;

  const report = (err: unknown) => {
    try {
      opts.onError?.(err);
    } catch {
      // an error handler that throws must not stop the watcher
    }
  };
  const safe = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      report(err);
    }
  };

  const timer = setInterval(() => {
    if (live) safe(() => opts.onResync('timer'));
  }, intervalMs);
  timer.unref();

  async function loop(): Promise<void> {
    let delay = initialMs;
    let everConnected = false;
    while (!signal.aborted) {
      const subAc = new AbortController();
      const subSignal = AbortSignal.any([signal, subAc.signal]);
      try {
        const iterator = client.subscribe(filters, subSignal)[Symbol.asyncIterator]();
        const firstP = iterator.next();
        // Surface a subscribe failure from firstP if the probe fails because containerd is down.
        firstP.catch(() => {});
        await Promise.race([client.version(), firstP.then(() => undefined)]);
        live = true;
        delay = initialMs;
        const reason: ResyncReason = everConnected ? 'reconnect' : 'start';
        everConnected = true;
        safe(() => opts.onResync(reason));
        let next = await firstP;
        while (!next.done) {
          const ev = next.value;
          safe(() => opts.onEvent(ev));
          next = await iterator.next();
        }
        if (!signal.aborted) report(new Error('containerd event stream ended'));
      } catch (err) {
        if (!signal.aborted) report(err);
      } finally {
        live = false;
        subAc.abort();
      }
      if (signal.aborted) break;
      try {
        await sleep(delay, undefined, { signal });
      } catch {
        break;
      }
      delay = Math.min(delay * 2, maxMs);
    }
    clearInterval(timer);
  }
  void loop();

  return {
    stop() {
      live = false;
      ac.abort();
      clearInterval(timer);
    },
    connected: () => live,
  };
}
