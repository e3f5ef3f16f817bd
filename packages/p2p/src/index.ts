export { PEER_KEY_FILE } from './identity.ts';
export { InvalidKeyError, keyToCid } from './keys.ts';
export { NETWORK_KEY_LENGTH, parseNetworkKeys, readNetworkKeyFile } from './network-key.ts';
export { createP2PNode, FERRY_KAD_PROTOCOL } from './node.ts';
export { createPeerAuth, PEER_AUTH_HEADER, PEER_PROOF_HEADER, type PeerAuthOptions } from './peer-auth.ts';
export { NoAcceptedKeyError, privateNetwork } from './private-network.ts';
export { verifyPeerSignature } from './signature.ts';
export type { CID, P2PLogger, P2PNode, P2PNodeOptions, P2PStats, Peer, Router } from './types.ts';
