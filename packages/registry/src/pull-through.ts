import { AsyncLocalStorage } from 'node:async_hooks';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ContentUpstream, Peer, PeerAuth } from '@ferry/interface';
import type { ByteRange } from '@ferry/oci';
import { Agent, type Dispatcher } from 'undici';
import { fill } from './fill.ts';
import { copyKey, electionKey, fetchKey, Inflight, type InflightDirectory } from './inflight.ts';
import { feedFromPeer } from './peer-feed.ts';
import { type Spool, type SpoolEntry, SpoolError } from './spool.ts';
import type { BodyFile, ContentInfo, ContentSource } from './types.ts';

/** What to fetch. */
export interface PullTarget {
  kind: 'blobs' | 'manifests';
  registry: string;
  repository: string;
  digest: string;
}

/** One in-flight transfer, for the status page. */
export interface TransferInfo {
  digest: string;
  registry: string;
  repository: string;
  size?: number;
  written: number;
  state: SpoolEntry['state'];
  /** Where the bytes come from: 'upstream', a peer id, or 'electing'. */
  source: string;
  /** Peers (addresses) streaming from this node's copy. */
  followers: string[];
  takeovers: number;
  startedAt: number;
}

/** Counters for metrics, called as things happen. */
export interface PullThroughObserver {
  onUpstreamBytes?(n: number): void;
  onSharedBytes?(n: number): void;
  onTakeover?(digest: string): void;
  onTransferEnd?(t: TransferInfo & { error?: string }): void;
}

export interface PullThroughOptions {
  spool: Spool;
  upstream: ContentUpstream;
  /** Without it every node fetches for itself (no sharing while in flight). */
  directory?: InflightDirectory;
  /** Election window; keep it ≤ the mirror resolve timeout. */
  windowMs: number;
  /** undici dispatcher for peer requests; default: an Agent owned (and closed) by the pull-through. */
  dispatcher?: Dispatcher;
  /** Signs requests to peers (with a network key; peers refuse unsigned ones then). */
  peerAuth?: PeerAuth;
  /** Deadline for a peer's response headers. */
  peerTimeoutMs: number;
  /** A peer's body may stall this long before the next source is tried. Default 10 s. */
  peerIdleMs?: number;
  /**
   * True once other nodes can get the digest without this entry: the node's containerd holds it and
   * it is advertised (the entry and its copy key are then removed).
   */
  held(digest: string): Promise<boolean>;
  /** A complete entry is removed after this long even if containerd never takes it. Default 10 min. */
  keepMs?: number;
  /** How long a request waits for an entry's size. Default 30 s. */
  sizeWaitMs?: number;
  observer?: PullThroughObserver;
  log?: {
    info(o: object, m?: string): void;
    warn(o: object, m?: string): void;
    debug?(o: object, m?: string): void;
  };
}

/** Requests run inside this context when a peer asks (the plugin sets it). */
export const requestContext = new AsyncLocalStorage<{ mirrored: boolean; remote: string }>();

interface Transfer {
  target: PullTarget;
  entry: SpoolEntry;
  source: string;
  followers: Set<string>;
  takeovers: number;
  startedAt: number;
  abort: AbortController;
  /** A lower-ranked node fetching the same digest from the upstream: this node stops its fetch and follows it. */
  yieldTo?: Peer | undefined;
}

/** Pull-through with first-pull sharing: one spool entry per digest, fed by the upstream or by peers. */
export class PullThrough {
  private readonly transfers = new Map<string, Transfer>();
  /** registry/repository → until when the upstream refused us (401/403). */
  private readonly refused = new Map<string, number>();
  private readonly opts: PullThroughOptions;
  private closed = false;
  private readonly dispatcher: Dispatcher;
  private readonly ownDispatcher: Agent | undefined;
  private readonly inflight: Inflight | undefined;

  constructor(opts: PullThroughOptions) {
    this.opts = opts;
    this.inflight =
      opts.directory === undefined ? undefined : new Inflight(opts.directory, opts.windowMs, opts.log);
    this.ownDispatcher =
      opts.dispatcher === undefined
        ? new Agent({ keepAliveTimeout: 30_000, connect: { timeout: Math.min(opts.peerTimeoutMs, 1000) } })
        : undefined;
    this.dispatcher = opts.dispatcher ?? (this.ownDispatcher as Agent);
  }

  list(): TransferInfo[] {
    return [...this.transfers.values()].map((t) => this.info(t));
  }

  private info(t: Transfer): TransferInfo {
    return {
      digest: t.target.digest,
      registry: t.target.registry,
      repository: t.target.repository,
      ...(t.entry.size === undefined ? {} : { size: t.entry.size }),
      written: t.entry.written,
      state: t.entry.state,
      source: t.source,
      followers: [...t.followers],
      takeovers: t.takeovers,
      startedAt: t.startedAt,
    };
  }

  /** The entry for a digest, starting a transfer when there is none. undefined: not possible (spool full, refused). */
  async start(target: PullTarget): Promise<SpoolEntry | undefined> {
    if (this.closed) return undefined;
    const existing = this.opts.spool.get(target.digest);
    if (existing !== undefined) return existing;
    const until = this.refused.get(`${target.registry}/${target.repository}`);
    if (until !== undefined && until > Date.now()) return undefined;
    let entry: SpoolEntry;
    try {
      entry = await this.opts.spool.create(target.digest);
    } catch (err) {
      // A concurrent request created it meanwhile.
      const again = this.opts.spool.get(target.digest);
      if (again !== undefined) return again;
      this.opts.log?.warn(
        { digest: target.digest, err: (err as Error).message },
        'pull-through: no spool entry',
      );
      return undefined;
    }
    const t: Transfer = {
      target,
      entry,
      source: 'electing',
      followers: new Set(),
      takeovers: 0,
      startedAt: Date.now(),
      abort: new AbortController(),
    };
    this.transfers.set(target.digest, t);
    void this.run(t);
    return entry;
  }

  /** A ContentSource serving the node's content, then in-flight spool entries (whole or by range, waiting for bytes). */
  source(local: ContentSource): ContentSource {
    const sizeWaitMs = this.opts.sizeWaitMs ?? 30_000;
    const spool = this.opts.spool;
    const self = this;
    return {
      resolveTag: (r, repo, tag) => local.resolveTag(r, repo, tag),
      async stat(digest): Promise<ContentInfo | undefined> {
        const held = await local.stat(digest);
        if (held !== undefined) return held;
        const e = spool.get(digest);
        if (e === undefined) return undefined;
        const size = await e.sizeKnown(AbortSignal.timeout(sizeWaitMs));
        if (size === undefined) return undefined;
        return { digest, size, ...(e.mediaType === undefined ? {} : { mediaType: e.mediaType }) };
      },
      async open(digest, range?: ByteRange) {
        const e = spool.get(digest);
        if (e === undefined) return local.open(digest, range);
        return Readable.from(counting(e.read(range?.start ?? 0, range?.end), self.reading(digest)));
      },
      // Blob bodies of spool entries go the file path too: read into recycled buffers as they arrive.
      async openFile(digest: string): Promise<BodyFile | undefined> {
        const e = spool.get(digest);
        if (e === undefined) return local.openFile?.(digest);
        return e.body(self.reading(digest));
      },
    };
  }

  /** A read of a spool entry begins: notes a peer following it; the counter of bytes shared while in flight. */
  private reading(digest: string): ((n: number) => void) | undefined {
    const ctx = requestContext.getStore();
    const t = this.transfers.get(digest);
    if (ctx?.mirrored && t !== undefined) t.followers.add(ctx.remote);
    return ctx?.mirrored ? this.opts.observer?.onSharedBytes : undefined;
  }

  private async run(t: Transfer): Promise<void> {
    const { digest } = t.target;
    const inflight = this.inflight;
    let error: string | undefined;
    try {
      let candidates: Peer[] = [];
      if (inflight !== undefined) {
        candidates = await inflight.elect(digest);
        inflight.advertise([copyKey(digest)]);
      }
      await this.feed(t, candidates);
    } catch (err) {
      error = (err as Error).message;
      t.entry.fail(err as Error);
    } finally {
      // The copy key stays while the entry does (until `drop`): a node asking between the end of this
      // transfer and the moment this node advertises the digest from containerd follows this copy
      // instead of fetching from the upstream again.
      inflight?.withdraw([electionKey(digest), fetchKey(digest)]);
      this.opts.observer?.onTransferEnd?.({ ...this.info(t), ...(error === undefined ? {} : { error }) });
      if (error !== undefined) {
        this.opts.log?.warn({ digest, error }, 'pull-through transfer failed');
        await this.drop(t);
      } else {
        this.opts.log?.info(
          {
            digest,
            bytes: t.entry.size,
            source: t.source,
            followers: t.followers.size,
            takeovers: t.takeovers,
          },
          'pull-through transfer complete',
        );
        void this.keepUntilHeld(t);
      }
    }
  }

  /** Feeds the entry from the candidates in order, then from the upstream (resuming where the bytes stopped). */
  private async feed(t: Transfer, candidates: Peer[]): Promise<void> {
    const { digest } = t.target;
    const tried = new Set<string>();
    let queue = candidates;
    let upstreamFailures = 0;
    for (;;) {
      if (t.entry.state === 'complete') return;
      if (t.entry.state === 'failed') throw t.entry.error ?? new SpoolError('failed');
      const peer = queue.find((p) => !tried.has(p.id));
      if (peer !== undefined) {
        tried.add(peer.id);
        t.source = peer.id;
        try {
          await feedFromPeer(t.entry, t.target, peer, {
            dispatcher: this.dispatcher,
            ...(this.inflight === undefined ? {} : { follower: this.inflight.peerId }),
            ...(this.opts.peerAuth === undefined ? {} : { peerAuth: this.opts.peerAuth }),
            headersTimeoutMs: this.opts.peerTimeoutMs + (this.opts.sizeWaitMs ?? 30_000),
            idleMs: this.opts.peerIdleMs ?? 10_000,
            signal: t.abort.signal,
          });
          continue;
        } catch (err) {
          if (err instanceof SpoolError) throw err;
          this.opts.log?.info(
            { digest, peer: peer.id, err: (err as Error).message },
            'pull-through: peer source lost',
          );
          // Re-elect among the copies still being fed, only lower ranks (no cycles); else take over.
          queue = (await this.inflight?.lowerCopies(digest, tried)) ?? [];
          continue;
        }
      }
      const wasFollowing = t.source !== 'electing' && t.source !== 'upstream';
      if (wasFollowing || (t.entry.written > 0 && t.source === 'upstream')) {
        t.takeovers++;
        this.opts.observer?.onTakeover?.(digest);
      }
      t.source = 'upstream';
      try {
        await this.fromUpstream(t, tried);
      } catch (err) {
        if (err instanceof SpoolError || err instanceof Refused) throw err;
        const yieldTo = t.yieldTo;
        if (yieldTo !== undefined) {
          t.yieldTo = undefined;
          this.inflight?.withdraw([fetchKey(digest)]);
          this.opts.log?.info(
            { digest, fetcher: yieldTo.id, at: t.entry.written },
            'pull-through: a lower-ranked node fetches it too; following it',
          );
          queue = [yieldTo];
          continue;
        }
        if (++upstreamFailures >= 3) throw err;
        this.opts.log?.info(
          { digest, err: (err as Error).message, at: t.entry.written },
          'pull-through: upstream lost, resuming',
        );
        await sleep(100 * upstreamFailures);
      }
    }
  }

  /**
   * Feeds the entry from the upstream, from where its bytes stop. Announces the fetch, and stops
   * (setting `t.yieldTo`) when a lower-ranked node turns out to fetch the same digest too.
   */
  private async fromUpstream(t: Transfer, tried: Set<string>): Promise<void> {
    const { registry, repository, kind, digest } = t.target;
    const attempt = new AbortController();
    if (this.inflight !== undefined) {
      this.inflight.advertise([fetchKey(digest)]);
      void this.inflight.lowerFetcher(digest, attempt.signal, tried).then((peer) => {
        if (peer === undefined || attempt.signal.aborted) return;
        t.yieldTo = peer;
        attempt.abort(new Error(`yielding to ${peer.id}`));
      });
    }
    try {
      const out = await this.opts.upstream.fetchContent(registry, repository, kind, digest, {
        offset: t.entry.written,
        signal: AbortSignal.any([t.abort.signal, attempt.signal]),
      });
      if (out.kind === 'unauthorized') {
        this.refused.set(`${registry}/${repository}`, Date.now() + 60_000);
        if (this.refused.size > 1000) this.refused.delete(this.refused.keys().next().value as string);
        throw new Refused(
          `the upstream wants credentials (${out.status}); containerd fetches it with its own`,
        );
      }
      if (out.kind === 'not-found') throw new Refused('the upstream does not know it');
      if (out.kind === 'unavailable') throw new Error(`upstream unavailable: ${out.reason}`);
      try {
        await t.entry.begin(out.size, out.mediaType);
        await fill(t.entry, out.body, {
          ...(this.opts.observer?.onUpstreamBytes === undefined
            ? {}
            : { onBytes: this.opts.observer.onUpstreamBytes }),
          stop: attempt.signal,
        });
      } finally {
        out.cancel();
      }
      if (t.entry.state !== 'complete') throw new Error(`upstream body ended at ${t.entry.written} bytes`);
    } finally {
      attempt.abort();
    }
  }

  private async keepUntilHeld(t: Transfer): Promise<void> {
    const until = Date.now() + (this.opts.keepMs ?? 600_000);
    while (!this.closed && Date.now() < until) {
      await sleep(1000);
      if (await this.opts.held(t.target.digest).catch(() => false)) break;
    }
    await this.drop(t);
  }

  private async drop(t: Transfer): Promise<void> {
    if (this.transfers.get(t.target.digest) === t) {
      this.transfers.delete(t.target.digest);
      this.inflight?.withdraw([copyKey(t.target.digest)]);
    }
    await this.opts.spool.remove(t.entry);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.transfers.values()) t.abort.abort(new Error('shutting down'));
    await this.opts.spool.close();
    await this.ownDispatcher?.destroy();
  }
}

/** The upstream will not give it to us: the request gets a 404 and containerd fetches it itself. */
class Refused extends Error {
  override name = 'Refused';
}

async function* counting(
  it: AsyncIterable<Buffer>,
  onBytes: ((n: number) => void) | undefined,
): AsyncGenerator<Buffer> {
  for await (const c of it) {
    onBytes?.(c.length);
    yield c;
  }
}
