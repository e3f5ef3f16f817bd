// The timeline of one cluster worker process while it is traced (registry tail analysis,
// registry-tail.ts): GC pauses, event-loop stalls, the registry's peer requests as undici reports
// them (created, headers sent, response headers, body end; each connection opened) and the
// registry's request events, all in epoch milliseconds (performance.timeOrigin + now) so the
// parent can line up the asking and the answering process.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { PerformanceObserver } from 'node:perf_hooks';
import type { RegistryRequestEvent } from '@ferry/registry';

const now = () => performance.timeOrigin + performance.now();

/** One undici request to a peer: when it was created, sent, answered (headers) and ended. */
export interface FetchMark {
  path: string;
  origin: string;
  created: number;
  sent?: number;
  headers?: number;
  ended?: number;
}

export interface Timeline {
  gc: { at: number; ms: number; kind: number }[];
  /** The loop ran a timer this much late (ms), noticed at `at`: it was blocked before. */
  stalls: { at: number; ms: number }[];
  fetches: FetchMark[];
  connects: { at: number; ms: number; origin: string }[];
  requests: (RegistryRequestEvent & { node: number; at: number })[];
}

let current: Timeline | undefined;
let stop: (() => void) | undefined;

/** Record a registry request event of node `node` (while traced). */
export function recordRequest(node: number, e: RegistryRequestEvent): void {
  current?.requests.push({ ...e, node, at: now() - e.durationMs });
}

/** Start tracing this process (stall sampler every `sampleMs`), or stop and return the timeline. */
export function trace(start: boolean, sampleMs = 5): Timeline | null {
  if (!start) {
    stop?.();
    const t = current;
    current = undefined;
    stop = undefined;
    return t ?? null;
  }
  stop?.();
  const t: Timeline = { gc: [], stalls: [], fetches: [], connects: [], requests: [] };
  current = t;
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      t.gc.push({
        at: performance.timeOrigin + e.startTime,
        ms: e.duration,
        kind: (e as { detail?: { kind?: number } }).detail?.kind ?? 0,
      });
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  let expected = now() + sampleMs;
  const timer = setInterval(() => {
    const at = now();
    if (at - expected > sampleMs) {
      t.stalls.push({ at, ms: at - expected });
    }
    expected = at + sampleMs;
  }, sampleMs);
  const marks = new WeakMap<object, FetchMark>();
  const connecting = new Map<string, number>();
  const origin = (m: unknown) => {
    const p = (m as { connectParams: { hostname?: string; port?: string } }).connectParams;
    return `${p.hostname}:${p.port}`;
  };
  type Msg = { request?: { origin?: string; path?: string }; connectParams?: object; connector?: object };
  const handlers: [string, (m: unknown) => void][] = [
    [
      'undici:request:create',
      (m) => {
        const r = (m as Msg).request as { origin: string; path: string };
        const mark = { path: r.path, origin: String(r.origin), created: now() };
        marks.set(r, mark);
        t.fetches.push(mark);
      },
    ],
    [
      'undici:client:sendHeaders',
      (m) => {
        const mark = marks.get((m as Msg).request as object);
        if (mark) mark.sent = now();
      },
    ],
    [
      'undici:request:headers',
      (m) => {
        const mark = marks.get((m as Msg).request as object);
        if (mark) mark.headers = now();
      },
    ],
    [
      'undici:request:trailers',
      (m) => {
        const mark = marks.get((m as Msg).request as object);
        if (mark) mark.ended = now();
      },
    ],
    ['undici:client:beforeConnect', (m) => connecting.set(origin(m), now())],
    [
      'undici:client:connected',
      (m) => {
        const began = connecting.get(origin(m));
        if (began !== undefined) {
          t.connects.push({ at: began, ms: now() - began, origin: origin(m) });
        }
      },
    ],
  ];
  for (const [name, fn] of handlers) {
    subscribe(name, fn);
  }
  stop = () => {
    clearInterval(timer);
    gc.disconnect();
    for (const [name, fn] of handlers) {
      unsubscribe(name, fn);
    }
  };
  return null;
}
