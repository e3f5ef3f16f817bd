/**
 * @ferry/interface: the contracts Ferry's packages share (types only, no code), so each is declared once:
 * peers and routing (@ferry/p2p implements, @ferry/registry consumes), tag resolutions, the upstream client's
 * calls and outcomes (@ferry/resolver implements, @ferry/registry and @ferry/pinner consume), and peer HTTP
 * authentication (@ferry/p2p implements, @ferry/registry consumes).
 */
export type { Peer, PeerAuth, PeerRequestAuth, PeerResponseProof, Router } from './peer.ts';
export type {
  ContentOutcome,
  ContentUpstream,
  TagMode,
  TagResolution,
  TagUpstream,
  UpstreamOutcome,
} from './tag.ts';
