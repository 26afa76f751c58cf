// Request layer over one raw netlink socket (npm `netlink`'s RawNetlinkSocket): sequence numbers,
// single requests (replies collected until the ACK), dumps (parts collected until NLMSG_DONE), and
// batches: many requests packed into one datagram, where only the last asks for an ACK. The kernel
// processes a datagram's messages in order and answers an error for each one that fails, so the
// errors arriving before the last ACK are exactly the failed ops, attributed by sequence number.

import { MessageType, RawNetlinkSocket, parseError, parseMessages, type NetlinkMessage } from 'netlink';
import { Flags, FlagsGet } from 'netlink';
import { withNetns } from '../netns.js';

export interface NlRequest {
  type: number;
  /** Extra flags besides REQUEST (and ACK, which the channel manages). */
  flags?: number;
  payload: Buffer;
}

/** A failed netlink request: errno is positive. */
export class NetlinkErrno extends Error {
  constructor(readonly errno: number, what: string) {
    super(`${what}: errno ${errno}`);
  }
}

interface Pending {
  parts: NetlinkMessage[];
  /** lost: the socket failed, so replies may be missing (not a kernel answer for this request). */
  onDone(err: number, parts: NetlinkMessage[], lost: boolean): void;
  /** Batch members only report errors; their chunk completes on the last member's ACK. */
  errorOnly?: boolean;
}

const HEADER = 16;
/** Messages per datagram in a batch: worst-case error replies must fit the receive buffer. */
export const BATCH_MAX_MESSAGES = 256;
const BATCH_MAX_BYTES = 64 * 1024;
const RCVBUF = 4 * 1024 * 1024;

export class NetlinkChannel {
  private readonly sock: RawNetlinkSocket;
  private readonly pending = new Map<number, Pending>();
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private closed = false;
  private dumpQueue: Promise<unknown> = Promise.resolve();

  /** Opens a socket for `protocol` (NETLINK_GENERIC, NETLINK_ROUTE), inside `netns` when given. */
  constructor(protocol: number, netns?: string) {
    this.sock = withNetns(netns, () => new RawNetlinkSocket(protocol, { recvBufferSize: RCVBUF, sendBufferSize: RCVBUF }));
    this.sock.on('message', (buf: Buffer) => this.receive(buf));
    this.sock.on('error', (err: { errno?: number }) => this.failAll(Math.abs(err.errno ?? 0) || 105 /* ENOBUFS */));
    this.sock.unref();
  }

  /** One request; resolves with the reply messages (none for a plain ACK); rejects with NetlinkErrno. */
  request(req: NlRequest): Promise<NetlinkMessage[]> {
    return this.sendOne(req, Flags.ACK);
  }

  /**
   * A dump: resolves with every NLM_F_MULTI part up to NLMSG_DONE. A socket runs one dump at a time
   * (the kernel answers EBUSY to a second while the first is unfinished), so dumps are queued.
   */
  dump(req: NlRequest): Promise<NetlinkMessage[]> {
    const run = this.dumpQueue.then(() => this.sendOne(req, FlagsGet.DUMP));
    this.dumpQueue = run.catch(() => undefined);
    return run;
  }

  /**
   * Sends the requests in order, packed into datagrams of up to BATCH_MAX_MESSAGES messages.
   * Resolves with one errno per request (0 = applied); never rejects for a refused request.
   */
  async batch(reqs: readonly NlRequest[]): Promise<number[]> {
    const result = new Array<number>(reqs.length).fill(0);
    let start = 0;
    while (start < reqs.length) {
      let end = start;
      let bytes = 0;
      while (end < reqs.length && end - start < BATCH_MAX_MESSAGES && (end === start || bytes + reqs[end].payload.length + HEADER <= BATCH_MAX_BYTES)) {
        bytes += reqs[end].payload.length + HEADER;
        end++;
      }
      await this.sendChunk(reqs, start, end, result);
      start = end;
    }
    return result;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(9 /* EBADF */);
    this.sock.close();
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) & 0x7fffffff || 1;
    return this.seq;
  }

  private frame(req: NlRequest, seq: number, flags: number): Buffer {
    const buf = Buffer.alloc(HEADER + req.payload.length);
    buf.writeUInt32LE(buf.length, 0);
    buf.writeUInt16LE(req.type, 4);
    buf.writeUInt16LE(Flags.REQUEST | (req.flags ?? 0) | flags, 6);
    buf.writeUInt32LE(seq, 8);
    buf.writeUInt32LE(0, 12);
    req.payload.copy(buf, HEADER);
    return buf;
  }

  private sendOne(req: NlRequest, flags: number): Promise<NetlinkMessage[]> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new NetlinkErrno(9, 'netlink socket closed'));
      const seq = this.nextSeq();
      this.track(seq, {
        parts: [],
        onDone: (err, parts) => (err ? reject(new NetlinkErrno(err, `netlink request type ${req.type}`)) : resolve(parts)),
      });
      this.transmit([this.frame(req, seq, flags)], [seq]);
    });
  }

  private sendChunk(reqs: readonly NlRequest[], start: number, end: number, result: number[]): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) {
        result.fill(9, start, end);
        return resolve();
      }
      const frames: Buffer[] = [];
      const seqs: number[] = [];
      for (let i = start; i < end; i++) {
        const seq = this.nextSeq();
        const last = i === end - 1;
        const index = i;
        seqs.push(seq);
        frames.push(this.frame(reqs[i], seq, last ? Flags.ACK : 0));
        this.track(seq, {
          parts: [],
          errorOnly: !last,
          onDone: (err, _parts, lost) => {
            result[index] = err;
            if (!last) return;
            // The last ACK closes the chunk: members that reported nothing were applied. If the socket
            // failed (ENOBUFS lost replies), the outcome of silent members is unknown: report that errno.
            for (const s of seqs) {
              const p = this.pending.get(s);
              if (!p) continue;
              this.pending.delete(s);
              if (lost) p.onDone(err, [], true);
            }
            resolve();
          },
        });
      }
      this.transmit(frames, seqs);
    });
  }

  private track(seq: number, p: Pending): void {
    if (this.pending.size === 0) this.sock.ref();
    this.pending.set(seq, p);
  }

  private transmit(frames: Buffer[], seqs: number[]): void {
    this.sock.send(frames.length === 1 ? frames[0] : Buffer.concat(frames), {}, (err) => {
      if (!err) return;
      const errno = Math.abs(err.errno) || 5;
      // Failing the last seq of a chunk fails the whole chunk with it.
      this.finish(seqs[seqs.length - 1], errno, true);
    });
  }

  private finish(seq: number, errno: number, lost = false): void {
    const p = this.pending.get(seq);
    if (!p) return;
    this.pending.delete(seq);
    p.onDone(errno, p.parts, lost);
    if (this.pending.size === 0 && !this.closed) this.sock.unref();
  }

  private receive(buf: Buffer): void {
    for (const msg of parseMessages(buf)) {
      const p = this.pending.get(msg.seq);
      if (!p) continue; // a reply to a request we gave up on
      if (msg.type === MessageType.ERROR) {
        const errno = Math.abs(parseError(msg.data, msg.flags).errno);
        if (p.errorOnly) {
          if (errno) {
            this.pending.delete(msg.seq);
            p.onDone(errno, [], false);
          }
        } else {
          this.finish(msg.seq, errno);
        }
      } else if (msg.type === MessageType.DONE) {
        const errno = msg.data.length >= 4 ? Math.abs(Math.min(0, msg.data.readInt32LE(0))) : 0;
        this.finish(msg.seq, errno);
      } else {
        p.parts.push(msg);
      }
    }
  }

  private failAll(errno: number): void {
    // Fail batch-closing and plain requests; batch members are resolved through their chunk's last seq.
    for (const [seq, p] of [...this.pending]) if (!p.errorOnly) this.finish(seq, errno, true);
  }
}
