/**
 * The production build: bundles the `ferry` CLI (packages/agent/src/cli.ts and every workspace package
 * and dependency it imports) into one ES module, packages/agent/dist/ferry.mjs, with esbuild.
 * `bin/ferry` and the image run that file when it exists, so production Node parses plain JavaScript
 * (no type stripping at start, one module graph instead of ~1,500 files).
 *
 *   node scripts/build.ts            # writes packages/agent/dist/ferry.mjs
 *   node scripts/build.ts --meta     # also ferry.meta.json: which inputs take how many bytes
 *
 * classic-level (LevelDB) stays outside: its native binding is found next to its own package, so the
 * bundle imports it by its path relative to the bundle (the workspace's node_modules layout, which the
 * image keeps).
 *
 * undici is bundled as the part Ferry uses (`request`, `Agent`, the `Dispatcher` type): its index loads
 * fetch, WebSocket, the cache and cookie code at start, and those touch `globalThis.File` and `Headers`,
 * which makes Node load its own internal copy of undici as well (test/bench/memory.ts measures the cost).
 */
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const agentDir = join(root, 'packages', 'agent');
export const bundleFile = join(agentDir, 'dist', 'ferry.mjs');

/** Native packages left out of the bundle, imported by their resolved path relative to the bundle. */
const NATIVE = ['classic-level'];

const nativeExternal = (outfile: string): Plugin => ({
  name: 'native-external',
  setup(b) {
    b.onResolve({ filter: new RegExp(`^(${NATIVE.join('|')})$`) }, (args) => {
      const req = createRequire(join(args.resolveDir, 'index.js'));
      const resolved = req.resolve(args.path);
      let path = relative(dirname(outfile), resolved);
      if (!path.startsWith('.')) path = `./${path}`;
      return { path, external: true };
    });
  },
});

/** What Ferry imports from 'undici', as the index builds it (see the file comment). */
const UNDICI_USED = ['Agent', 'request'];

export const slimUndici: Plugin = {
  name: 'slim-undici',
  setup(b) {
    b.onResolve({ filter: /^undici$/ }, (args) => ({
      path: createRequire(join(args.resolveDir, 'index.js')).resolve('undici'),
      namespace: 'slim-undici',
    }));
    b.onLoad({ filter: /.*/, namespace: 'slim-undici' }, (args) => {
      const lib = (p: string) => JSON.stringify(join(dirname(args.path), 'lib', p));
      return {
        resolveDir: dirname(args.path),
        loader: 'js',
        contents: `
const Agent = require(${lib('dispatcher/agent.js')});
const Dispatcher = require(${lib('dispatcher/dispatcher.js')});
const api = require(${lib('api/index.js')});
const util = require(${lib('core/util.js')});
const { InvalidArgumentError } = require(${lib('core/errors.js')});
const { getGlobalDispatcher } = require(${lib('global.js')});
Object.assign(Dispatcher.prototype, api);
// undici's request(url, opts) for a string or URL (its index's makeDispatcher(api.request)).
function request(url, opts = {}) {
  if (typeof url !== 'string' && !(url instanceof URL)) throw new InvalidArgumentError('invalid url');
  const u = util.parseURL(url);
  const { agent, dispatcher = getGlobalDispatcher() } = opts;
  if (agent) throw new InvalidArgumentError('unsupported opts.agent');
  return api.request.call(dispatcher, {
    ...opts,
    origin: u.origin,
    path: u.search ? u.pathname + u.search : u.pathname,
    method: opts.method || (opts.body ? 'PUT' : 'GET'),
  });
}
module.exports = { ${UNDICI_USED.join(', ')}, Dispatcher };
`,
      };
    });
  },
};

/**
 * Builds the bundle to `outfile` (default {@link bundleFile}). Another file must stay in
 * packages/agent/dist/ too: classic-level is imported by its path relative to the bundle.
 */
export async function buildBundle(opts: { meta?: boolean; outfile?: string } = {}): Promise<void> {
  const outfile = opts.outfile ?? bundleFile;
  await build({
    entryPoints: [join(agentDir, 'src', 'cli.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    // CommonJS dependencies (grpc-js, protobufjs, pino, …) call require() for Node's built-ins.
    banner: {
      js: "import { createRequire as __ferryRequire } from 'node:module'; const require = __ferryRequire(import.meta.url);",
    },
    plugins: [nativeExternal(outfile), slimUndici],
    sourcemap: false,
    minify: true,
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
  }).then(async (r) => {
    if (opts.meta) await writeFile(`${outfile.slice(0, -4)}.meta.json`, JSON.stringify(r.metafile));
  });
}

if (import.meta.main) {
  await buildBundle({ meta: process.argv.includes('--meta') });
  console.log(`built ${relative(root, bundleFile)}`);
}
