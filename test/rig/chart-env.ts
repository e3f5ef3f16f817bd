import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

const deploy = new URL('../../deploy/', import.meta.url);

/**
 * The agent's process environment as the chart sets it: `NODE_OPTIONS` from values.yaml `nodeOptions`
 * and the glibc malloc settings (`MALLOC_*`) the DaemonSet template gives the agent container.
 */
export function chartEnv(): Record<string, string> {
  const values = parseYaml(readFileSync(new URL('charts/ferry/values.yaml', deploy), 'utf8')) as {
    nodeOptions: string;
  };
  const env: Record<string, string> = { NODE_OPTIONS: values.nodeOptions };
  const template = readFileSync(new URL('charts/ferry/templates/daemonset.yaml', deploy), 'utf8');
  for (const m of template.matchAll(/- name: (MALLOC_\w+)\s*\n\s*value: "([^"]*)"/g)) env[m[1]!] = m[2]!;
  if (!('MALLOC_ARENA_MAX' in env)) throw new Error('chartEnv: no MALLOC_* setting found in daemonset.yaml');
  return env;
}

/** Node's flags before the script in the image's ENTRYPOINT (V8 flags NODE_OPTIONS does not take). */
export function imageNodeArgs(): string[] {
  const dockerfile = readFileSync(new URL('Dockerfile', deploy), 'utf8');
  const m = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile);
  if (!m) throw new Error('imageNodeArgs: no ENTRYPOINT in deploy/Dockerfile');
  const argv = JSON.parse(m[1]!) as string[];
  return argv.slice(1, -1);
}
