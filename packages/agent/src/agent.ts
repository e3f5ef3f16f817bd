/**
 * PLACEHOLDER: the composition of containerd + p2p + registry + tracker is written by the lead.
 * It exists so that the CLI type-checks; replace the whole file.
 */
import type { AgentConfig } from './config.ts';

/** Runs the agent until SIGTERM/SIGINT. */
export async function runAgent(config: AgentConfig): Promise<void> {
  void config;
  throw new Error('not wired yet');
}
