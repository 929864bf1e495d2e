// Adds and deletes elements of nft sets and maps over nfnetlink, without the nft binary; I/O layer of libs/nft.
import { createNetlink, NetlinkSocket } from 'netlink';
import { NftError } from './nft-error';

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_CREATE = 0x400;
const NLMSG_ERROR = 2;
const NLA_F_NESTED = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_DATA = 2;
const NFTA_DATA_VALUE = 1;
const FAMILIES: Record<string, number> = { inet: 1, ip: 2, ip6: 10 };

/** Bytes of elements per netlink message (nft's own batches use messages of this order). */
const MESSAGE_BYTES = 60_000;
/** How long the kernel may take to answer one batch. */
const ANSWER_MS = 10_000;

export interface MapRef {
  family: 'inet' | 'ip' | 'ip6';
  table: string;
  name: string;
}

/**
 * One element: its key as the kernel stores it (each field of a concatenation padded to 4 bytes, at most 64 bytes),
 * and for a map a 32-bit value.
 */
export interface RawElement {
  key: Uint8Array;
  /** A map element's value; none for a set's. */
  value?: number;
}

/** Elements to add to or delete from one set or map (see NetlinkElements.change). */
export interface ElementOp {
  name: string;
  verb: 'add' | 'delete';
  elements: readonly RawElement[];
}

const align4 = (n: number) => (n + 3) & ~3;

function attr(type: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(align4(4 + payload.length));
  b.writeUInt16LE(4 + payload.length, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

const cstring = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]);

function message(type: number, flags: number, seq: number, family: number, resId: number, body: Buffer): Buffer {
  const b = Buffer.alloc(16 + 4 + body.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt16LE(type, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  b.writeUInt32LE(0, 12);
  b.writeUInt8(family, 16);
  b.writeUInt8(0, 17);
  b.writeUInt16BE(resId, 18);
  body.copy(b, 20);
  return b;
}

/** Bytes of one element's attribute: the key, and for a map add its value (see writeElement). */
const elementBytes = (keyLen: number, withValue: boolean) => 4 + 4 + 4 + align4(keyLen) + (withValue ? 4 + 4 + 4 : 0);

/** Writes one element's attribute at `o`: its key, and for a map add its value (host byte order, as nft keeps a mark). */
function writeElement(b: Buffer, o: number, e: RawElement, withValue: boolean): number {
  const keyLen = e.key.length;
  if (keyLen < 1 || keyLen > 64) throw new NftError(`nft elements: a key of ${keyLen} bytes`, '');
  const len = elementBytes(keyLen, withValue);
  const hdr = (at: number, l: number, type: number) => {
    b.writeUInt16LE(l, at);
    b.writeUInt16LE(type, at + 2);
  };
  hdr(o, len, NFTA_LIST_ELEM | NLA_F_NESTED);
  hdr(o + 4, 8 + align4(keyLen), NFTA_SET_ELEM_KEY | NLA_F_NESTED);
  hdr(o + 8, 4 + keyLen, NFTA_DATA_VALUE);
  b.set(e.key, o + 12);
  b.fill(0, o + 12 + keyLen, o + 12 + align4(keyLen));
  if (withValue) {
    const v = o + 12 + align4(keyLen);
    hdr(v, 12, NFTA_SET_ELEM_DATA | NLA_F_NESTED);
    hdr(v + 4, 8, NFTA_DATA_VALUE);
    b.writeUInt32LE(e.value! >>> 0, v + 8);
  }
  return o + len;
}

/**
 * Writes set and map elements over nfnetlink in batches that are each one transaction of the kernel. Why not the nft binary:
 * it parses and evaluates every element (about 10 µs each here), so a change that pins a third of a million sessions
 * spent seconds in nft; the kernel itself takes a fraction of that. Used only for elements whose encoding the caller
 * owns (keys of fixed-size fields); everything else goes through nft.
 */
export class NetlinkElements {
  private socket: NetlinkSocket | null = null;
  private seq = Math.floor(Math.random() * 2 ** 30);
  /** Bytes of messages per batch: what the socket's send buffer takes. */
  private batchBytes = 0;

  /** The socket, opened at the first write (in the namespace of the process at that time). */
  private open(): NetlinkSocket {
    if (!this.socket) {
      const sock = createNetlink(NETLINK_NETFILTER);
      try {
        sock.setSendBufferSize(4 << 20);
        sock.setRecvBufferSize(4 << 20);
      } catch {
        // The defaults (net.core.wmem_max) bound the batches instead.
      }
      // The kernel reports twice what it grants; a batch must fit in one send.
      this.batchBytes = Math.max(MESSAGE_BYTES + 1024, Math.floor(sock.getSendBufferSize() / 2) - 4096);
      sock.unref();
      this.socket = sock;
    }
    return this.socket;
  }

  close(): void {
    this.socket?.close();
    this.socket = null;
  }

  /**
   * Changes, in order, as transactions of at most a batch each: a failed batch changes nothing, and the ones before
   * it stay. `del` entries go before `add` entries of the same call (a key given another value is deleted, then added).
   */
  write(map: MapRef, del: readonly RawElement[], add: readonly RawElement[]): Promise<void> {
    return this.change(map, [
      { name: map.name, verb: 'delete', elements: del },
      { name: map.name, verb: 'add', elements: add },
    ]);
  }

  /**
   * Element changes of sets and maps of one table, in order, as transactions of at most a batch each (a small change
   * is one transaction). A set's elements carry no value; a map's added elements do.
   */
  change(table: Omit<MapRef, 'name'>, ops: readonly ElementOp[]): Promise<void> {
    const next = this.inFlight.then(() => this.changeNow(table, ops));
    this.inFlight = next.catch(() => undefined);
    return next;
  }

  /**
   * The change being written, if any: one change at a time, because the socket's answers are matched to one batch
   * (each waiting batch would add a listener) and two changes of the same key must reach the kernel in call order.
   */
  private inFlight: Promise<void> = Promise.resolve();

  private async changeNow(table: Omit<MapRef, 'name'>, ops: readonly ElementOp[]): Promise<void> {
    const family = FAMILIES[table.family];
    const msgs: { type: number; flags: number; body: Buffer }[] = [];
    // Elements go straight into each message's buffer: a buffer per attribute cost more than the kernel's work.
    const pack = (name: string, elems: readonly RawElement[], type: number, flags: number) => {
      const head = [attr(NFTA_SET_ELEM_LIST_TABLE, cstring(table.table)), attr(NFTA_SET_ELEM_LIST_SET, cstring(name))];
      const headBytes = head.reduce((n, h) => n + h.length, 0);
      for (let i = 0; i < elems.length;) {
        const body = Buffer.alloc(headBytes + 4 + MESSAGE_BYTES + elementBytes(64, true));
        let o = 0;
        for (const h of head) o += h.copy(body, o);
        const list = o;
        o += 4;
        while (i < elems.length && o - list < MESSAGE_BYTES) {
          const e = elems[i++];
          o = writeElement(body, o, e, type === NFT_MSG_NEWSETELEM && e.value !== undefined);
        }
        body.writeUInt16LE(o - list, list);
        body.writeUInt16LE(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, list + 2);
        msgs.push({ type: (NFNL_SUBSYS_NFTABLES << 8) | type, flags, body: body.subarray(0, o) });
      }
    };
    for (const op of ops) {
      if (op.verb === 'delete') pack(op.name, op.elements, NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK);
      else pack(op.name, op.elements, NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
    }
    let batch: Buffer[] = [];
    let bytes = 0;
    const sock = this.open();
    for (const m of msgs) {
      if (batch.length && bytes + m.body.length + 20 > this.batchBytes) {
        await this.send(sock, batch);
        batch = [];
        bytes = 0;
      }
      batch.push(message(m.type, m.flags, ++this.seq, family, 0, m.body));
      bytes += m.body.length + 20;
    }
    if (batch.length) await this.send(sock, batch);
  }

  /** One batch: BEGIN, the messages, END; resolves when the kernel acknowledged every message, rejects on an error. */
  private send(sock: NetlinkSocket, msgs: Buffer[]): Promise<void> {
    const begin = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, ++this.seq, 0, NFNL_SUBSYS_NFTABLES, Buffer.alloc(0));
    const end = message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, ++this.seq, 0, NFNL_SUBSYS_NFTABLES, Buffer.alloc(0));
    const waiting = new Set(msgs.map((m) => m.readUInt32LE(8)));
    return new Promise((resolve, reject) => {
      const done = (err: Error | null) => {
        clearTimeout(timer);
        sock.socket.off('message', onMessage);
        sock.unref();
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => done(new NftError(`nft elements: no answer within ${ANSWER_MS} ms (nothing known applied)`, '')), ANSWER_MS);
      const onMessage = (buf: Buffer) => {
        for (let off = 0; off + 16 <= buf.length;) {
          const len = buf.readUInt32LE(off);
          if (len < 16 || off + len > buf.length) return done(new NftError('nft elements: malformed answer', ''));
          if (buf.readUInt16LE(off + 4) === NLMSG_ERROR && len >= 20) {
            const errno = -buf.readInt32LE(off + 16);
            // The answer carries the header of the message it answers: its seq at 8 bytes into that header.
            const seq = len >= 36 ? buf.readUInt32LE(off + 20 + 8) : -1;
            // Answers to an earlier batch that failed may still come: only this batch's count.
            if (!waiting.has(seq)) {
              off += align4(len);
              continue;
            }
            if (errno !== 0) return done(new NftError(`nft elements: the kernel refused the batch (errno ${errno}); nothing of it applied`, ''));
            waiting.delete(seq);
            if (!waiting.size) return done(null);
          }
          off += align4(len);
        }
      };
      sock.ref();
      sock.socket.on('message', onMessage);
      sock.socket.send([begin, ...msgs, end], {}, (e) => e && done(new NftError(`nft elements: send failed: ${e.message}`, '')));
    });
  }
}
