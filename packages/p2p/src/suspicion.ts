// Spreading a death found by a liveness probe (liveness.ts), SWIM-like. Only a peer's ring
// predecessors probe it, so the others learn of its death from them:
// - The node whose probe went unanswered tells every member it is connected to, on
//   `/ferry/suspect/1.0.0` (one stream per member over the existing connection, never a dial; one
//   length-prefixed frame: the suspect's peer id as a multihash).
// - A told node does not take it as truth (a peer's statement is evidence): it stops yielding the
//   suspect to lookups at once and probes it itself (`check`); the suspect is dead (its records
//   dropped) only if it leaves that probe unanswered, and cleared if it answers. A told node does
//   not tell further: the suspect's predecessors each tell everyone.
// - Bounded: at most `PER_SENDER_PER_MINUTE` suspicions taken from one member per minute and
//   `MAX_CHECKING` checks at once; the rest are ignored (counted). A suspicion about this node, a
//   peer we are not connected to (a lookup's dial finds out), one already suspected, or one from a
//   peer that is not an identified member is ignored too.
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import { peerIdFromMultihash, peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import type { Libp2p } from 'libp2p';
import * as Digest from 'multiformats/hashes/digest';
import type { CheckResult } from './liveness.ts';
import { errorText } from './options.ts';
import type { P2PLogger } from './types.ts';

export const FERRY_SUSPECT_PROTOCOL = '/ferry/suspect/1.0.0';

/** Bound for one frame (an Ed25519 peer id's multihash is 38 bytes). */
const MAX_FRAME_BYTES = 128;
/** Suspicions taken from one member per minute. */
export const PER_SENDER_PER_MINUTE = 8;
/** Suspects checked at once. */
export const MAX_CHECKING = 64;
/** Senders whose rate is remembered (a minute's window each). */
const MAX_SENDERS = 1_024;

export interface SuspicionInit {
  libp2p: Libp2p;
  log: P2PLogger;
  /** Deadline of one tell (stream set-up and frame). */
  timeoutMs: number;
  /** Whether `peer` is an identified member of the DHT (suspicions are taken from members only). */
  isMember: (peer: string) => boolean;
  /** Probe a peer (liveness.ts). */
  check: (peer: string) => Promise<CheckResult>;
  /** A suspect left this node's own probe unanswered: it is dead. */
  onConfirmed: (peer: string, reason: string) => void;
  stopSignal: AbortSignal;
}

export class Suspicion {
  private readonly init: SuspicionInit;
  private readonly self: string;
  /** Suspects being checked: lookups skip them meanwhile. */
  private readonly suspects = new Set<string>();
  /** Per sender: suspicions taken in the current minute, and when it began. */
  private readonly senders = new Map<string, { count: number; since: number }>();
  /**
   * Since start: suspects this node told its members of, suspicions received, those confirmed by
   * this node's own probe, those cleared (the suspect answered), and those ignored.
   */
  readonly counts = { told: 0, received: 0, confirmed: 0, cleared: 0, ignored: 0 };

  constructor(init: SuspicionInit) {
    this.init = init;
    this.self = init.libp2p.peerId.toString();
  }

  async start(): Promise<void> {
    await this.init.libp2p.handle(
      FERRY_SUSPECT_PROTOCOL,
      (stream: Stream, connection: Connection) => {
        this.receive(stream, connection.remotePeer.toString()).catch((err: unknown) => {
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        });
      },
      { maxInboundStreams: 4, maxOutboundStreams: 4 },
    );
  }

  /** True while `peer` is suspected and being checked. */
  isSuspect(peer: string): boolean {
    return this.suspects.has(peer);
  }

  /** This node found `suspect` dead by its own probe: tell every member it is connected to. */
  tell(suspect: string, members: PeerId[]): void {
    this.counts.told++;
    const frame = peerIdFromString(suspect).toMultihash().bytes;
    for (const member of members) {
      const key = member.toString();
      if (key === suspect || key === this.self) {
        continue;
      }
      const conn = this.init.libp2p.getConnections(member).find((c) => c.status === 'open');
      if (conn === undefined) {
        continue;
      }
      this.send(conn, frame).catch((err: unknown) => {
        if (!this.init.stopSignal.aborted) {
          this.init.log.debug({ peer: key, suspect, err: errorText(err) }, 'telling a suspicion failed');
        }
      });
    }
  }

  private async send(conn: Connection, frame: Uint8Array): Promise<void> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.init.timeoutMs), this.init.stopSignal]);
    const stream = await conn.newStream(FERRY_SUSPECT_PROTOCOL, { signal });
    try {
      await lpStream(stream).write(frame, { signal });
      await stream.close({ signal });
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  private async receive(stream: Stream, sender: string): Promise<void> {
    const signal = AbortSignal.timeout(this.init.timeoutMs);
    const frame = (await lpStream(stream, { maxDataLength: MAX_FRAME_BYTES }).read({ signal })).subarray();
    await stream.close({ signal });
    this.counts.received++;
    let suspect: string;
    try {
      suspect = peerIdFromMultihash(Digest.decode(frame)).toString();
    } catch {
      this.counts.ignored++;
      return; // malformed: evidence of nothing
    }
    if (!this.admit(sender, suspect)) {
      this.counts.ignored++;
      return;
    }
    this.suspects.add(suspect);
    this.init.log.info({ peer: suspect, by: sender }, 'peer suspected by a member: checking it');
    const result = await this.init.check(suspect);
    this.suspects.delete(suspect);
    if (result === 'gone') {
      this.counts.confirmed++;
      this.init.onConfirmed(suspect, `suspected by ${sender} and no answer to our own ping`);
    } else {
      this.counts.cleared++;
      this.init.log.info({ peer: suspect, by: sender, result }, 'suspicion cleared: the peer answered');
    }
  }

  /** Whether to check a suspicion: from a member, within its rate and the checks bound, worth one. */
  private admit(sender: string, suspect: string): boolean {
    if (
      !this.init.isMember(sender) ||
      suspect === this.self ||
      suspect === sender ||
      this.suspects.has(suspect) ||
      this.suspects.size >= MAX_CHECKING ||
      !this.init.libp2p.getConnections().some((c) => c.remotePeer.toString() === suspect)
    ) {
      return false;
    }
    const now = Date.now();
    let rate = this.senders.get(sender);
    if (rate === undefined || now - rate.since >= 60_000) {
      if (rate === undefined && this.senders.size >= MAX_SENDERS) {
        for (const [key, r] of this.senders) {
          if (now - r.since >= 60_000) {
            this.senders.delete(key);
          }
        }
        if (this.senders.size >= MAX_SENDERS) {
          return false;
        }
      }
      rate = { count: 0, since: now };
      this.senders.set(sender, rate);
    }
    if (rate.count >= PER_SENDER_PER_MINUTE) {
      return false;
    }
    rate.count++;
    return true;
  }
}
