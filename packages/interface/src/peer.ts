/** A peer's registry endpoint: `http://host:port`. */
export interface Peer {
  /** libp2p peer id of the node. */
  id: string;
  /**
   * Remote IP of the live libp2p connection to the peer (its peer id authenticated by noise);
   * never an address the peer merely announced.
   */
  host: string;
  /** The registry port the peer advertised. */
  port: number;
}

/** Finds the peers that hold a key: a digest 'sha256:…' or a tag key '<registry>/<repo>:<tag>'. */
export interface Router {
  lookup(key: string, options: { signal: AbortSignal }): AsyncIterable<Peer>;
}

/** What a signed peer request is checked over. */
export interface PeerRequestAuth {
  method: string;
  /** Path and query, exactly as sent (`/v2/…?ns=…`). */
  pathAndQuery: string;
}

/** The response metadata the answering peer signs with its identity key. */
export interface PeerResponseProof {
  /** The request's nonce. */
  nonce: string;
  status: number;
  /** Docker-Content-Digest sent ('' when none). */
  digest: string;
  /** Content-Length sent ('' when none). */
  length: string;
  /** X-Ferry-Resolved-At sent (a tag answer's resolution time); absent when none was sent. */
  resolvedAt?: string;
}

/**
 * Peer HTTP authentication with the cluster's network key and the nodes' identity keys
 * (@ferry/p2p's `createPeerAuth`). The registry only sees headers.
 */
export interface PeerAuth {
  /** This node's peer id. */
  readonly peerId: string;
  /** Headers for a request to a peer; `nonce` is what the answer must be signed over. */
  signRequest(req: PeerRequestAuth): { headers: Record<string, string>; nonce: string };
  /**
   * Checks a peer request's headers: the requesting peer id when the MAC holds with an accepted key,
   * inside the time window, and the nonce was not seen before; otherwise undefined.
   */
  verifyRequest(
    req: PeerRequestAuth,
    headers: Record<string, string | string[] | undefined>,
  ): string | undefined;
  /** Headers proving this node answered `proof` (signed with the node identity key). */
  signResponse(proof: PeerResponseProof): Promise<Record<string, string>>;
  /** True when `headers` carry a valid signature by `peerId` over `proof`. */
  verifyResponse(
    peerId: string,
    proof: PeerResponseProof,
    headers: Record<string, string | string[] | undefined>,
  ): Promise<boolean>;
}
