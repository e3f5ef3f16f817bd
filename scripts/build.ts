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

const nativeExternal: Plugin = {
  name: 'native-external',
  setup(b) {
    b.onResolve({ filter: new RegExp(`^(${NATIVE.join('|')})$`) }, (args) => {
      const req = createRequire(join(args.resolveDir, 'index.js'));
      const resolved = req.resolve(args.path);
      let path = relative(dirname(bundleFile), resolved);
      if (!path.startsWith('.')) path = `./${path}`;
      return { path, external: true };
    });
  },
};

export async function buildBundle(opts: { meta?: boolean } = {}): Promise<void> {
  await build({
    entryPoints: [join(agentDir, 'src', 'cli.ts')],
    outfile: bundleFile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    // CommonJS dependencies (grpc-js, protobufjs, pino, …) call require() for Node's built-ins.
    banner: {
      js: "import { createRequire as __ferryRequire } from 'node:module'; const require = __ferryRequire(import.meta.url);",
    },
    plugins: [nativeExternal],
    sourcemap: false,
    minify: true,
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
  }).then(async (r) => {
    if (opts.meta) await writeFile(`${bundleFile.slice(0, -4)}.meta.json`, JSON.stringify(r.metafile));
  });
}

if (import.meta.main) {
  await buildBundle({ meta: process.argv.includes('--meta') });
  console.log(`built ${relative(root, bundleFile)}`);
}
