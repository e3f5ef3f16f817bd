import type { ContainerdClient } from './types.ts';

/**
 * Checks the CRI plugin config for what Ferry needs. Returns human-readable warnings:
 * `discard_unpacked_layers` on (layers vanish after unpack, so this node cannot serve them),
 * `config_path` unset (hosts.toml mirrors are ignored), or `config_path` not containing
 * `expectedConfigPath`. Returns [] when all is fine **and also when the config is unknowable**
 * (containerd 2.x, CRI disabled): absence of warnings is not proof of a good config.
 */
export async function checkCriConfig(
  client: ContainerdClient,
  expectedConfigPath?: string,
): Promise<string[]> {
  const cfg = await client.criConfig();
  if (!cfg) return [];
  const warnings: string[] = [];
  if (cfg.discardUnpackedLayers) {
    warnings.push(
      'containerd CRI discard_unpacked_layers = true: layer blobs are deleted after unpack, so this node can serve manifests and configs but not layers',
    );
  }
  if (!cfg.configPath) {
    warnings.push(
      'containerd CRI registry config_path is unset: hosts.toml mirrors are not used, so pulls will not go through Ferry',
    );
  } else if (expectedConfigPath !== undefined) {
    const roots = cfg.configPath.split(':').map((p) => p.replace(/\/+$/, ''));
    if (!roots.includes(expectedConfigPath.replace(/\/+$/, ''))) {
      warnings.push(
        `containerd CRI registry config_path is "${cfg.configPath}", not "${expectedConfigPath}": the hosts.toml Ferry writes there is not read`,
      );
    }
  }
  return warnings;
}
