// Signatures with a node's libp2p identity (Ed25519): a peer signs with `P2PNode.sign`, anyone
// holding its peer id verifies, since an Ed25519 peer id embeds the public key.
import { peerIdFromString } from '@libp2p/peer-id';

/**
 * True when `signature` is `peerId`'s signature over `data`. False for anything else: a malformed
 * peer id, a peer id without an embedded public key, a wrong or malformed signature. Never throws.
 */
export async function verifyPeerSignature(
  peerId: string,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  try {
    const key = peerIdFromString(peerId).publicKey;
    if (key === undefined) {
      return false;
    }
    return await key.verify(data, signature);
  } catch {
    return false;
  }
}
