// Child process for the kill -9 test: records entries as fast as it can and prints each key once
// `record` has resolved (acknowledged). The parent kills it with SIGKILL mid-burst.
import { openLastKnownStore } from '../src/index.ts';

const [dir, countArg] = process.argv.slice(2);
const store = await openLastKnownStore(dir as string);
process.stdout.write('open\n');
const count = Number(countArg);
for (let i = 0; i < count; i++) {
  const tag = `t${i}`;
  await store.record({
    registry: 'example.com',
    repository: 'burst/app',
    tag,
    digest: `sha256:${i.toString(16).padStart(64, '0')}`,
    resolvedAt: 1_700_000_000_000 + i,
    source: 'upstream',
  });
  process.stdout.write(`ack ${tag}\n`);
}
process.stdout.write('done\n');
await store.close();
