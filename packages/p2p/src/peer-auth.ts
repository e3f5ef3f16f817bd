// Authentication of HTTP requests between peers (the registry's `PeerAuth`, @ferry/interface).
//
// Request: `X-Ferry-Auth: v1 kid=<key id> peer=<peer id> ts=<ms> nonce=<random> mac=<HMAC-SHA256>` with
// the MAC under a cluster network key over method, path and query, timestamp, nonce and peer id. The
// server accepts every listed key (rotation), a timestamp within the window, and each nonce once (a
// bounded cache that outlives the window), so a captured header is useless later or on another path.
// Response: `X-Ferry-Proof: <signature>` by the answering node's identity key over the request's nonce,
// the status, Docker-Content-Digest, Content-Length and X-Ferry-Resolved-At (when sent); the client checks it against the peer id it
// found as the provider, so only that node can answer for it.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { PeerAuth, PeerRequestAuth, PeerResponseProof } from '@ferry/interface';
import { verifyPeerSignature } from './signature.ts';

/** Request header carrying the MAC. */
export const PEER_AUTH_HEADER = 'x-ferry-auth';
/** Response header carrying the answering node's signature. */
export const PEER_PROOF_HEADER = 'x-ferry-proof';

/** Options of {@link createPeerAuth}. */
export interface PeerAuthOptions {
  /** The cluster's network keys (32 bytes each); the first signs, every one is accepted. */
  keys: Uint8Array[];
  /** This node: its peer id and a signer with its identity key (`P2PNode`). */
  node: { peerId: string; sign(data: Uint8Array): Promise<Uint8Array> };
  /** Accepted clock difference either way. Default 30 s. */
  windowMs?: number;
  /** Nonces remembered (the oldest go first; any older than the window are refused anyway). Default 100,000. */
  maxNonces?: number;
  now?: () => number;
}

const HEADER_RE =
  /^v1 kid=([0-9a-f]{16}) peer=([1-9A-HJ-NP-Za-km-z]{20,128}) ts=(\d{1,16}) nonce=([A-Za-z0-9_-]{22}) mac=([A-Za-z0-9_-]{43})$/;

function keyId(key: Uint8Array): string {
  return createHash('sha256').update('ferry peer auth key id').update(key).digest('hex').slice(0, 16);
}

function first(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' || v === undefined ? v : v[0];
}

function proofBytes(p: PeerResponseProof): Buffer {
  // A tag answer's resolution time is signed too; a header added to or stripped from an answer breaks it.
  const at = p.resolvedAt === undefined ? '' : `\nresolved-at ${p.resolvedAt}`;
  return Buffer.from(`ferry-proof v1\n${p.nonce}\n${p.status}\n${p.digest}\n${p.length}${at}`);
}

/** Creates the peer authentication of this node (see the file comment). */
export function createPeerAuth(opts: PeerAuthOptions): PeerAuth {
  if (opts.keys.length === 0) throw new Error('peer auth needs at least one network key');
  const keys = new Map(opts.keys.map((k) => [keyId(k), Buffer.from(k)] as const));
  const primary = Buffer.from(opts.keys[0] as Uint8Array);
  const primaryId = keyId(primary);
  const windowMs = opts.windowMs ?? 30_000;
  const maxNonces = opts.maxNonces ?? 100_000;
  const now = opts.now ?? Date.now;
  const seen = new Map<string, number>(); // nonce -> ts, in insertion order

  const mac = (key: Buffer, r: PeerRequestAuth, ts: string, nonce: string, peer: string) =>
    createHmac('sha256', key)
      .update(`ferry-auth v1\n${r.method.toUpperCase()}\n${r.pathAndQuery}\n${ts}\n${nonce}\n${peer}`)
      .digest();

  return {
    peerId: opts.node.peerId,

    signRequest(r) {
      const ts = String(now());
      const nonce = randomBytes(16).toString('base64url');
      const m = mac(primary, r, ts, nonce, opts.node.peerId).toString('base64url');
      return {
        nonce,
        headers: {
          [PEER_AUTH_HEADER]: `v1 kid=${primaryId} peer=${opts.node.peerId} ts=${ts} nonce=${nonce} mac=${m}`,
        },
      };
    },

    verifyRequest(r, headers) {
      const h = first(headers[PEER_AUTH_HEADER]);
      const m = h === undefined ? null : HEADER_RE.exec(h);
      if (m === null) return undefined;
      const [, kid, peer, ts, nonce, got] = m as unknown as [string, string, string, string, string, string];
      const key = keys.get(kid);
      if (key === undefined) return undefined;
      const at = Number(ts);
      const t = now();
      if (!(Math.abs(t - at) <= windowMs)) return undefined;
      const want = mac(key, r, ts, nonce, peer);
      const gotBytes = Buffer.from(got, 'base64url');
      if (gotBytes.length !== want.length || !timingSafeEqual(gotBytes, want)) return undefined;
      if (seen.has(nonce)) return undefined;
      // Forget what the window refuses anyway, then the oldest when full.
      for (const [n, when] of seen) {
        if (seen.size < maxNonces && t - when <= 2 * windowMs) break;
        seen.delete(n);
      }
      seen.set(nonce, at);
      return peer;
    },

    async signResponse(proof) {
      const sig = await opts.node.sign(proofBytes(proof));
      return { [PEER_PROOF_HEADER]: Buffer.from(sig).toString('base64url') };
    },

    async verifyResponse(peerId, proof, headers) {
      const h = first(headers[PEER_PROOF_HEADER]);
      if (h === undefined || h.length > 200) return false;
      return verifyPeerSignature(peerId, proofBytes(proof), Buffer.from(h, 'base64url'));
    },
  };
}
