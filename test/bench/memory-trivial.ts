/** Loaded by memory-probe.ts: the cost of Node's TypeScript loader itself. */
export const trivial: number = 1;
