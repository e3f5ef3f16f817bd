/**
 * One full, memory-reducing garbage collection on demand. An idle process allocates nothing, so V8
 * starts no collection by itself: buffers that a burst of responses left behind (and the heap it grew)
 * would stay resident until the next traffic. V8's `gc` function is exposed for this one call (in a
 * separate context, so nothing else in the process sees it).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options?: { type: string; execution: string; flavor: string }) => void;
let gc: GcFunction | null | undefined;

/** Collects everything unreachable and gives freed heap pages back; false when V8 refuses. */
export function collectGarbage(): boolean {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as GcFunction;
    } catch {
      gc = null;
    }
  }
  if (gc === null) return false;
  // 'last-resort': V8's collect-all-available-garbage, which also shrinks the heap.
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  return true;
}
