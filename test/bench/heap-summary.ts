/**
 * Summarises a V8 heap snapshot (`.heapsnapshot`, e.g. from `node --heapsnapshot-signal=SIGUSR2`): self
 * size by node type and by constructor / category, largest first. Used by memory.ts; also a CLI:
 *
 *   node test/bench/heap-summary.ts FILE [TOP]
 */
import { readFileSync } from 'node:fs';

export interface HeapSummary {
  total: number;
  byType: [string, number, number][];
  byName: [string, number, number][];
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self sizes grouped by node type and by `type:name` (objects by constructor; code and strings by kind). */
export function summarise(file: string, top = 15): HeapSummary {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const stride = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const byType = new Map<string, [number, number]>();
  const byName = new Map<string, [number, number]>();
  let total = 0;
  const add = (m: Map<string, [number, number]>, k: string, size: number) => {
    const e = m.get(k) ?? [0, 0];
    e[0] += size;
    e[1]++;
    m.set(k, e);
  };
  for (let i = 0; i < snap.nodes.length; i += stride) {
    const type = types[snap.nodes[i + iType]!]!;
    const size = snap.nodes[i + iSize]!;
    total += size;
    add(byType, type, size);
    // Strings and code by kind only (their names are their contents); objects by constructor name.
    const name =
      type === 'object' || type === 'native' || type === 'hidden'
        ? snap.strings[snap.nodes[i + iName]!]!
        : '';
    add(byName, name ? `${type}: ${name.slice(0, 60)}` : type, size);
  }
  const sorted = (m: Map<string, [number, number]>) =>
    [...m.entries()]
      .sort((a, b) => b[1][0] - a[1][0])
      .slice(0, top)
      .map(([k, [s, c]]): [string, number, number] => [k, s, c]);
  return { total, byType: sorted(byType), byName: sorted(byName) };
}

if (import.meta.main) {
  const s = summarise(process.argv[2]!, Number(process.argv[3] ?? 20));
  console.log(`total self size ${(s.total / 1048576).toFixed(1)} MiB`);
  for (const [k, size, count] of s.byName)
    console.log(`${(size / 1048576).toFixed(2).padStart(7)} MiB ${String(count).padStart(8)}  ${k}`);
}
