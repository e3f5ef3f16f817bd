/**
 * The `ferry` command line: `ferry agent`, `ferry configure`, `ferry pinner`, `ferry version`.
 * Errors are one clear line on stderr (no stack trace); bad configuration or usage exits with 2.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { runAgent } from './agent.ts';
import { addAgentOptions, ConfigError, resolveAgentConfig } from './config.ts';
import { ConfigureError, cleanupHosts, configureHosts } from './configure.ts';
import { collectList } from './option-table.ts';
import { addPinnerCommand, runPinnerCommand } from './pinner.ts';

/** Exit code for bad configuration or usage. */
export const EXIT_USAGE = 2;

/** The agent package version (package.json). */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Where the CLI reads and writes (injectable for tests). */
export interface CliIo {
  env: Readonly<Record<string, string | undefined>>;
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

const defaultIo: CliIo = {
  env: process.env,
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

/** Builds the commander program (exported for tests and docs). */
export function buildProgram(io: CliIo = defaultIo): Command {
  const program = new Command('ferry')
    .description('Ferry: every Kubernetes node a registry mirror for its neighbours.')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError('(run with --help for usage)');

  addAgentOptions(
    program
      .command('agent')
      .description('Run the node agent: registry mirror, P2P router, containerd tracker, ops server.'),
  ).action(async (_opts, cmd: Command) => {
    const config = resolveAgentConfig(cmd.opts(), io.env);
    await runAgent(config);
  });

  program
    .command('configure')
    .description("Write containerd hosts.toml files that put Ferry's mirror in front of the registries.")
    .requiredOption('--hosts-dir <dir>', "containerd's registry hosts directory (CRI config_path)")
    .option(
      '--mirror-targets <urls>',
      'mirror URLs tried in order, e.g. http://10.0.0.5:30020 (comma-separated)',
      collectList,
    )
    .option(
      '--mirrored-registries <urls>',
      'registries to mirror, e.g. https://docker.io,https://ghcr.io; empty: all (_default)',
      collectList,
    )
    .option('--resolve-tags', 'give the mirrors the resolve capability (tag -> digest) (default)')
    .option('--no-resolve-tags', 'mirrors get only the pull capability')
    .option('--prepend-existing', "keep the original hosts.toml's hosts after Ferry's, and its CA files")
    .option('--cleanup', "restore the original configuration and remove Ferry's files")
    .addOption(
      new Option('--dial-timeout <duration>', 'dial_timeout of each mirror (containerd 2.x)').default(
        '200ms',
      ),
    )
    .action(async (opts: Record<string, unknown>) => {
      const hostsDir = String(opts.hostsDir);
      if (opts.cleanup) {
        const r = await cleanupHosts(hostsDir);
        io.stdout(
          r.restored
            ? `restored the original configuration in ${hostsDir}\n`
            : `no Ferry backup in ${hostsDir}; nothing to restore\n`,
        );
        return;
      }
      const targets = (opts.mirrorTargets as string[] | undefined) ?? [];
      if (targets.length === 0) throw new ConfigureError('--mirror-targets is required (unless --cleanup)');
      const r = await configureHosts({
        hostsDir,
        mirrorTargets: targets,
        mirroredRegistries: (opts.mirroredRegistries as string[] | undefined) ?? [],
        resolveTags: opts.resolveTags !== false,
        prependExisting: opts.prependExisting === true,
        dialTimeout: String(opts.dialTimeout),
      });
      if (r.backedUp) io.stdout(`backed up the original configuration to ${hostsDir}/_backup\n`);
      for (const f of r.files)
        io.stdout(`${r.changed.includes(f) ? 'wrote' : 'unchanged'} ${hostsDir}/${f}\n`);
    });

  addPinnerCommand(program, io.env, runPinnerCommand);

  program
    .command('version')
    .description('Print the version.')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json']).default('text'))
    .action((opts: { format: string }) => {
      const v = version();
      io.stdout(
        opts.format === 'json'
          ? `${JSON.stringify({ version: v, node: process.versions.node })}\n`
          : `ferry ${v}\n`,
      );
    });

  return program;
}

/** Runs the CLI with user arguments (without node and script); resolves to the exit code. */
export async function main(args: readonly string[], io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync([...args], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its message (or the help/version text).
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.help' ||
        err.code === 'commander.version'
      ) {
        return 0;
      }
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (err instanceof ConfigError) {
      io.stderr(`${err.message}\n`);
      return EXIT_USAGE;
    }
    if (err instanceof ConfigureError) {
      io.stderr(`ferry configure: ${err.message}\n`);
      return EXIT_USAGE;
    }
    io.stderr(`ferry: ${err instanceof Error ? err.message : String(err)}\n`);
    if (io.env.FERRY_DEBUG_STACK === '1' && err instanceof Error && err.stack) io.stderr(`${err.stack}\n`);
    return 1;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
