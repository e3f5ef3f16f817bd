import { parseManifest } from '@ferry/oci';

/** A Map used as a bounded LRU: the oldest entry goes when `max` is reached. */
function setBounded<K, V>(m: Map<K, V>, key: K, value: V, max: number): void {
  m.delete(key);
  if (m.size >= max) m.delete(m.keys().next().value as K);
  m.set(key, value);
}

/** Tunables of {@link PeerBook}. */
export interface PeerBookOptions {
  /** A peer that failed is tried last for this long. Default 60 s. */
  failureMemoryMs?: number;
  /** A peer that served wrong bytes for a digest is not asked for it again for this long. Default 30 min. */
  quarantineMs?: number;
  /** Most peers, quarantined pairs and blob sizes remembered (each). Default 4096, 4096, 16384. */
  maxPeers?: number;
  maxQuarantined?: number;
  maxSizes?: number;
  now?: () => number;
  /** Told of every quarantine (logs, metrics). */
  onQuarantine?: (digest: string, peerId: string) => void;
}

/**
 * What this node learned about peers and blobs while relaying: which peers failed lately (tried last),
 * which peer served wrong bytes for which digest (quarantined), and the true size of blobs from the
 * manifests this node served (a peer's body is cut there). Every table is bounded.
 */
export class PeerBook {
  readonly #failed = new Map<string, number>();
  readonly #quarantined = new Map<string, number>();
  readonly #sizes = new Map<string, number>();
  readonly #o: Required<Omit<PeerBookOptions, 'now' | 'onQuarantine'>> & { now: () => number };
  readonly #onQuarantine: PeerBookOptions['onQuarantine'];

  constructor(o: PeerBookOptions = {}) {
    this.#o = {
      failureMemoryMs: o.failureMemoryMs ?? 60_000,
      quarantineMs: o.quarantineMs ?? 30 * 60_000,
      maxPeers: o.maxPeers ?? 4096,
      maxQuarantined: o.maxQuarantined ?? 4096,
      maxSizes: o.maxSizes ?? 16_384,
      now: o.now ?? Date.now,
    };
    this.#onQuarantine = o.onQuarantine;
  }

  /** The peer failed a request (refused, timed out, broke, lied). */
  failed(peerId: string): void {
    setBounded(this.#failed, peerId, this.#o.now(), this.#o.maxPeers);
  }

  /** The peer served a request in full. */
  served(peerId: string): void {
    this.#failed.delete(peerId);
  }

  /** True when the peer failed within the failure memory. */
  recentlyFailed(peerId: string): boolean {
    const at = this.#failed.get(peerId);
    return at !== undefined && this.#o.now() - at < this.#o.failureMemoryMs;
  }

  /** The peer sent bytes that do not hash to `digest`, or more than its size: never ask it for it again soon. */
  quarantine(digest: string, peerId: string): void {
    setBounded(this.#quarantined, `${digest} ${peerId}`, this.#o.now(), this.#o.maxQuarantined);
    this.failed(peerId);
    this.#onQuarantine?.(digest, peerId);
  }

  isQuarantined(digest: string, peerId: string): boolean {
    const at = this.#quarantined.get(`${digest} ${peerId}`);
    return at !== undefined && this.#o.now() - at < this.#o.quarantineMs;
  }

  /** Remembers the sizes a manifest gives its children (layers, config, platform manifests). */
  learnManifest(bytes: Uint8Array, mediaType?: string): void {
    try {
      for (const d of parseManifest(bytes, mediaType).children)
        setBounded(this.#sizes, d.digest, d.size, this.#o.maxSizes);
    } catch {
      // not a manifest this node can read: nothing learned
    }
  }

  /** The true size of a blob, when a manifest that went through this node named it. */
  sizeOf(digest: string): number | undefined {
    return this.#sizes.get(digest);
  }
}
