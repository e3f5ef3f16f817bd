/**
 * First-pull sharing (`--first-pull`): the registry's pull-through, with its spool under
 * `<dataDir>/spool`, the upstream client of the tag policy, the DHT for in-flight transfers, and the
 * metrics it feeds.
 */

import { join } from 'node:path';
import type { ContentUpstream, PeerAuth } from '@ferry/interface';
import type { P2PNode } from '@ferry/p2p';
import { PullThrough, Spool } from '@ferry/registry';
import type { AgentConfig } from './config.ts';
import type { Logger } from './logger.ts';
import type { FerryMetrics } from './metrics.ts';

export interface AgentPullThrough {
  pullThrough: PullThrough;
  close(): Promise<void>;
}

/** The pull-through of a running agent; undefined when the switch is off or there is no data dir. */
export async function createAgentPullThrough(
  config: Pick<AgentConfig, 'firstPull' | 'spoolMaxBytes' | 'dataDir' | 'mirrorResolveTimeout'>,
  deps: {
    upstream: ContentUpstream;
    router: Pick<P2PNode, 'peerId' | 'advertise' | 'withdraw' | 'lookup'>;
    /** True once the node's containerd holds the digest and advertises it. */
    held(digest: string): Promise<boolean>;
    metrics: FerryMetrics;
    logger: Logger;
    /** Signs requests to peers (with a network key). */
    peerAuth?: PeerAuth;
  },
): Promise<AgentPullThrough | undefined> {
  if (!config.firstPull) return undefined;
  if (!config.dataDir) {
    deps.logger.warn({}, 'first-pull sharing needs --data-dir for its spool; it is off');
    return undefined;
  }
  const spool = await Spool.open({ dir: join(config.dataDir, 'spool'), maxBytes: config.spoolMaxBytes });
  const { metrics, logger } = deps;
  const pullThrough = new PullThrough({
    spool,
    upstream: deps.upstream,
    directory: deps.router,
    windowMs: config.mirrorResolveTimeout,
    peerTimeoutMs: 2000,
    ...(deps.peerAuth === undefined ? {} : { peerAuth: deps.peerAuth }),
    held: deps.held,
    log: logger,
    observer: {
      onUpstreamBytes: (n) => metrics.upstreamFetchedBytes.inc(n),
      onSharedBytes: (n) => metrics.inflightSharedBytes.inc(n),
      onTakeover: () => metrics.transferTakeovers.inc(),
      onTransferEnd: (t) => {
        metrics.transfers.inc({ result: t.error === undefined ? 'complete' : 'failed' });
        metrics.transferFollowers.observe(t.followers.length);
      },
    },
  });
  logger.info(
    {
      spool: join(config.dataDir, 'spool'),
      maxBytes: config.spoolMaxBytes,
      windowMs: config.mirrorResolveTimeout,
    },
    'first-pull sharing on',
  );
  return {
    pullThrough,
    async close() {
      await pullThrough.close();
    },
  };
}
