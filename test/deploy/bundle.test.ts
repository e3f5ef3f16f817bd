/**
 * The production bundle's undici (scripts/build.ts `slimUndici`): only the part Ferry uses is bundled.
 * A small program built with the same plugin talks to a local server through `request` and an `Agent`
 * (GET, HEAD, a query string) and answers as the same program bundled with the whole undici; unlike that
 * one it reads none of Node's lazily loaded web globals (`File`, `Headers`, …: reading them makes Node
 * load its own internal undici), and the bundle holds no undici index, WebSocket, cache or cookie code.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { build } from 'esbuild';
import { slimUndici } from '../../scripts/build.ts';
import { repoRoot } from './k8s.ts';

const program = `
import { createServer } from 'node:http';
import { Agent, request } from 'undici';
const server = createServer((req, res) => res.end(req.method + ' ' + req.url));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const dispatcher = new Agent({ keepAliveTimeout: 10_000 });
const out = [];
for (const method of ['GET', 'GET', 'HEAD']) {
  const res = await request('http://127.0.0.1:' + server.address().port + '/v2/a/blobs/x?ns=r', { method, dispatcher });
  out.push([res.statusCode, await res.body.text()]);
}
await dispatcher.close();
server.close();
console.log(JSON.stringify({ out, touched: globalThis.__touched }));
`;

/** Runs first: notes which of Node's lazily loaded web globals (they load its internal undici) are read. */
const trap = `
globalThis.__touched = [];
for (const name of ['File', 'Headers', 'fetch', 'WebSocket']) {
  const d = Object.getOwnPropertyDescriptor(globalThis, name);
  Object.defineProperty(globalThis, name, {
    configurable: true,
    get() {
      if (!globalThis.__touched.includes(name)) globalThis.__touched.push(name);
      return d.get ? d.get.call(globalThis) : d.value;
    },
  });
}`;

/** Bundles `program` (with or without the slim undici) and runs it; its output and the bundle's inputs. */
async function bundleAndRun(dir: string, slim: boolean) {
  const outfile = join(dir, `program-${slim}.mjs`);
  const { metafile } = await build({
    stdin: { contents: program, resolveDir: join(repoRoot, 'packages', 'registry'), loader: 'js' },
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    banner: {
      js: `import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);\n${trap}`,
    },
    plugins: slim ? [slimUndici] : [],
    metafile: true,
    logLevel: 'warning',
  });
  const output = JSON.parse(execFileSync(process.execPath, [outfile], { encoding: 'utf8', timeout: 30_000 }));
  return { output, inputs: Object.keys(metafile.inputs).filter((p) => p.includes('/undici/')) };
}

describe('the bundle’s slim undici', () => {
  it('request and Agent answer as the whole undici does, and Node’s web globals stay unread', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-bundle-'));
    try {
      const slim = await bundleAndRun(dir, true);
      const whole = await bundleAndRun(dir, false);
      assert.deepEqual(slim.output.out, [
        [200, 'GET /v2/a/blobs/x?ns=r'],
        [200, 'GET /v2/a/blobs/x?ns=r'],
        [200, ''],
      ]);
      assert.deepEqual(slim.output.touched, []);
      assert.notDeepEqual(whole.output.touched, [], 'the whole undici reads them (the check works)');
      assert.deepEqual(slim.output.out, whole.output.out);
      assert.ok(slim.inputs.some((p) => p.endsWith('lib/dispatcher/agent.js')));
      assert.deepEqual(
        slim.inputs.filter(
          (p) =>
            !p.startsWith('slim-undici:') &&
            /\/undici\/(index\.js|lib\/web\/(websocket|cache|cookies|eventsource)\/)/.test(p),
        ),
        [],
        'no undici index, WebSocket, cache, cookie or EventSource code in the bundle',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
