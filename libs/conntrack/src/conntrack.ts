// Conntrack over ctnetlink through the `netlink` package: full dumps and NEW/DESTROY event streams with loss
// accounting; I/O layer of libs/conntrack.
import { spawn, ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createNetlink } from 'netlink';
import { CtEntry, CtEventKind, CtTuple, encodeLookup, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET, nfgenmsg, NFNL_SUBSYS_CTNETLINK, parseEntry } from './codec';

const READER = join(__dirname, 'event-reader.js');

const NETLINK_NETFILTER = 12;
const NLM_F_DUMP = 0x300;

export class ConntrackError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConntrackError';
  }
}

/** "Request rejected: EPERM" and errno exceptions → ConntrackError with a code. */
function toError(e: unknown, what: string): ConntrackError {
  const msg = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: string })?.code ?? /\b(E[A-Z]{3,})\b/.exec(msg)?.[1] ?? 'ENETLINK';
  return new ConntrackError(code, `${what}: ${msg}`);
}

/** One full dump of the conntrack table, both families (nfgenmsg family 0). */
export async function dumpConntrack(): Promise<CtEntry[]> {
  const sock = createNetlink(NETLINK_NETFILTER);
  try {
    const [msgs] = await sock.request((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, nfgenmsg(0), { flags: NLM_F_DUMP, timeout: 30000 });
    const out: CtEntry[] = [];
    for (const m of msgs) {
      const e = parseEntry(m.data);
      if (e) out.push(e);
    }
    return out;
  } catch (e) {
    throw toError(e, 'conntrack dump');
  } finally {
    sock.close();
  }
}

const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLMSG_ERROR = 2;
const ENOENT = 2;

/** The answer to one request: the entry it carried (null without one), "absent" (ENOENT), or the kernel's error. */
type CtAnswer = CtEntry | null | 'absent' | ConntrackError;

/** Requests in flight on one socket: their answers must fit its receive buffer (a few hundred bytes each). */
const IN_FLIGHT = 128;

/**
 * Ctnetlink requests about single entries, on one socket, answered by sequence number. Why not the package's
 * request(): the kernel answers a GET with one message flagged multipart and no DONE, which the package refuses as
 * unterminated. Why one socket for many: a socket per lookup costs a system call pair each, and a node checks up to
 * a thousand tuples at once when a sibling records reused ones.
 */
async function ctMany(type: number, payloads: Buffer[], what: string): Promise<CtAnswer[]> {
  const out: CtAnswer[] = [];
  for (let i = 0; i < payloads.length; i += IN_FLIGHT) out.push(...(await ctRound(type, payloads.slice(i, i + IN_FLIGHT), what)));
  return out;
}

function ctRound(type: number, payloads: Buffer[], what: string): Promise<CtAnswer[]> {
  const sock = createNetlink(NETLINK_NETFILTER);
  const answers: (CtAnswer | undefined)[] = payloads.map(() => undefined);
  const entries: (CtEntry | null)[] = payloads.map(() => null);
  const index = new Map<number, number>();
  let left = payloads.length;
  return new Promise((resolve, reject) => {
    const finish = (err: Error | null) => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(answers as CtAnswer[]);
    };
    const answer = (i: number | undefined, a: CtAnswer) => {
      if (i === undefined || answers[i] !== undefined) return;
      answers[i] = a;
      if (--left === 0) finish(null);
    };
    const timer = setTimeout(() => finish(new ConntrackError('ETIMEDOUT', `${what}: no answer within 5000 ms`)), 5000);
    sock.socket.on('message', (buf: Buffer) => {
      for (let off = 0; off + 16 <= buf.length;) {
        const len = buf.readUInt32LE(off);
        if (len < 16 || off + len > buf.length) return finish(new ConntrackError('ENETLINK', `${what}: malformed answer`));
        const body = buf.subarray(off + 16, off + len);
        const t = buf.readUInt16LE(off + 4);
        const i = index.get(buf.readUInt32LE(off + 8));
        if (t === NLMSG_ERROR && i !== undefined) {
          const errno = body.length >= 4 ? -body.readInt32LE(0) : -1;
          if (errno === 0) answer(i, entries[i]);
          else if (errno === ENOENT) answer(i, 'absent');
          else answer(i, new ConntrackError(errno === 1 ? 'EPERM' : 'ENETLINK', `${what}: errno ${errno}`));
        } else if (t >> 8 === NFNL_SUBSYS_CTNETLINK && i !== undefined) entries[i] = parseEntry(body) ?? entries[i];
        off += (len + 3) & ~3;
      }
    });
    payloads.forEach((p, i) => {
      const seq = sock.send((NFNL_SUBSYS_CTNETLINK << 8) | type, p, { flags: NLM_F_REQUEST | NLM_F_ACK }, (e) => e && finish(toError(e, what)));
      index.set(seq, i);
    });
  });
}

async function ctOne(type: number, payload: Buffer, what: string): Promise<CtEntry | null | 'absent'> {
  const [a] = await ctMany(type, [payload], what);
  if (a instanceof Error) throw a;
  return a;
}

/** The entry a tuple belongs to (as its original or its reply direction), or null when there is none. */
export async function getConntrack(t: CtTuple): Promise<CtEntry | null> {
  return (await getConntracks([t]))[0];
}

/** The entries these tuples belong to, in order (null where there is none), over one socket. */
export async function getConntracks(tuples: readonly CtTuple[]): Promise<(CtEntry | null)[]> {
  const answers = await ctMany(
    IPCTNL_MSG_CT_GET,
    tuples.map((t) => encodeLookup(t)),
    'conntrack get',
  );
  const failed = answers.find((a): a is ConntrackError => a instanceof Error);
  if (failed) throw failed;
  return answers.map((a) => (a === 'absent' ? null : (a as CtEntry | null)));
}

/** Delete exactly this entry (its original tuple and id); false when it is gone already. */
export async function deleteConntrack(e: Pick<CtEntry, 'orig' | 'id'>): Promise<boolean> {
  return (await ctOne(IPCTNL_MSG_CT_DELETE, encodeLookup(e.orig, e.id), 'conntrack delete')) !== 'absent';
}

export interface EventStreamOptions {
  /**
   * Which events: new entries, updates (status changes such as a seen reply or ASSURED; with nft `ct event set`
   * limited to what matters) and destroyed ones. @default ['new', 'destroy']
   */
  kinds?: ('new' | 'update' | 'destroy')[];
  /** SO_RCVBUF of the event socket; the kernel drops events (ENOBUFS) when it is full. @default 8 MiB */
  recvBufferSize?: number;
  /** Called with every batch of events, in the order the kernel sent them. */
  onEvents: (events: { kind: CtEventKind; entry: CtEntry }[]) => void;
  /**
   * Called when events were lost (the kernel's queue overflowed). How many is unknown: the consumer must re-sync
   * from a dump. Calls are counted in `overruns`.
   */
  onLoss?: () => void;
  /** Tests only: the reader blocks its event loop this long once, as a slow consumer would. */
  stallMs?: number;
  /** First restart delay of a reader that died soon after starting; doubles up to `maxBackoffMs`. @default 100 */
  backoffMs?: number;
  /** @default 5000 */
  maxBackoffMs?: number;
}

/**
 * A subscription to conntrack events; `events`, `overruns` and `restarts` are the metrics. The socket lives in a
 * child reader process (see event-reader.ts); when the reader dies, events were lost: the loss is counted,
 * `onLoss` runs, and a new reader starts at once. The child inherits this process's network namespace.
 */
export class ConntrackEvents {
  events = 0;
  overruns = 0;
  /** Readers started after the first. */
  restarts = 0;
  private closed = false;
  private startedAt = 0;
  private backoff = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private child: ChildProcess | null = null;
  readonly ready: Promise<void>;
  private markReady: () => void = () => undefined;

  private constructor(private readonly o: EventStreamOptions) {
    this.ready = new Promise((r) => (this.markReady = r));
    this.start();
  }

  static open(o: EventStreamOptions): ConntrackEvents {
    return new ConntrackEvents(o);
  }

  private start(): void {
    const args = [READER, (this.o.kinds ?? ['new', 'destroy']).join(','), String(this.o.recvBufferSize ?? 8 << 20), String(this.o.stallMs ?? 0)];
    const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child = child;
    this.startedAt = Date.now();
    child.stdin!.on('error', () => undefined);
    child.on('error', () => undefined); // 'exit' follows and restarts
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let msg: { ready?: boolean; kind?: CtEventKind; entry?: CtEntry };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.ready) return this.markReady();
      if (msg.kind && msg.entry) {
        this.events++;
        this.batch.push({ kind: msg.kind, entry: msg.entry });
        if (!this.flushing) {
          this.flushing = true;
          setImmediate(() => this.flush());
        }
      }
    });
    child.on('exit', () => {
      if (this.closed) return;
      this.flush();
      this.overruns++;
      // Why a backoff: under a SYN flood the reader overruns again and again; restarting at once turns that into
      // a fork loop. A reader that lived 10 s restarts at once; one that keeps dying waits longer each time.
      const first = this.o.backoffMs ?? 100;
      this.backoff = Date.now() - this.startedAt > 10_000 ? 0 : Math.min(this.backoff ? this.backoff * 2 : first, this.o.maxBackoffMs ?? 5000);
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (this.closed) return;
        this.restarts++;
        this.start();
      }, this.backoff);
      this.o.onLoss?.();
    });
  }

  private batch: { kind: CtEventKind; entry: CtEntry }[] = [];
  private flushing = false;

  private flush(): void {
    this.flushing = false;
    if (!this.batch.length) return;
    const b = this.batch;
    this.batch = [];
    this.o.onEvents(b);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.child?.stdin?.end();
    this.child?.kill();
  }
}
