// The control state every node shares in Redis, all in the `{ctl}` slot: the leader lock and the bucket-table epoch,
// each node's health view, the admin state, and the change notifications; I/O layer of libs/session-table.
import { Cluster } from 'ioredis';
import type { ChainableCommander, Redis } from 'ioredis';
import { Commands, SCRIPTS } from './scripts';
import { AdminState, decodeAdmin, decodeEpoch, EpochDoc } from './agreement';
import { ID } from './session-key';

/** What the table needs of a client: ioredis' Redis and Cluster both are one. */
export type RedisLike = Redis | Cluster;

/** How long an admin change waits for a replica to hold it, where the primary has one (see setAdmin). */
export const REPLICA_ACK_MS = 1000;

/** A shared admin change as setAdmin made it. */
export interface AdminShare extends AdminState {
  /** Whether a replica held the change before it was announced; null when the primary has no replica. */
  replicated: boolean | null;
}

type AdminPipeline = ChainableCommander & {
  fwlbSetAdmin(admin: string, id: string, enabled: string, at: string): ChainableCommander;
  fwlbAnnounceAdmin(admin: string, id: string, value: string, channel: string, message: string): ChainableCommander;
  fwlbPublishEpoch(lock: string, counter: string, gen: string, doc: string, owner: string, candidate: string, body: string): ChainableCommander;
  fwlbAnnounceEpoch(doc: string, value: string, channel: string, message: string): ChainableCommander;
};

/** How many replicas the primary of a `role` answer has (0: none, or not a primary). */
const replicasOf = (role: unknown[]) => (role[0] === 'master' && Array.isArray(role[2]) ? role[2].length : 0);

/** A pipeline's answers, or the first error of its commands. */
async function execAll(p: ChainableCommander): Promise<unknown[]> {
  const res = await p.exec();
  if (!res) throw new Error('the pipeline was discarded');
  for (const [e] of res) if (e) throw e;
  return res.map(([, r]) => r);
}

/**
 * The key names, each with its Redis Cluster hash tag: a bucket's keys share the bucket's tag, the control keys
 * (leader lock, epoch, admin state, health views) share `{ctl}`, so every script and MULTI touches one slot.
 */
export function tableKeys(prefix: string) {
  return {
    sessions: (b: number) => `${prefix}{${b}}:s`,
    grace: (b: number) => `${prefix}{${b}}:g`,
    /** Sessions that ended lately, id → "firewall until" (see the DEL script). */
    ended: (b: number) => `${prefix}{${b}}:e`,
    leader: `${prefix}{ctl}:leader`,
    epochCounter: `${prefix}{ctl}:epoch:n`,
    epochGeneration: `${prefix}{ctl}:epoch:gen`,
    epoch: `${prefix}{ctl}:epoch`,
    admin: `${prefix}{ctl}:admin`,
    nodes: `${prefix}{ctl}:nodes`,
    health: (node: string) => `${prefix}{ctl}:health:${node}`,
    /** Where the admin state was kept before the keys had slots; read once and moved (see migrate). */
    legacyAdmin: `${prefix}admin`,
    /** The sessions' keys before they were kept by bucket: removed by migrate. */
    legacySessions: [`${prefix}s`, `${prefix}sessions`, `${prefix}grace`],
    channel: `${prefix}events`,
  };
}

/**
 * `moved`: sessions whose record changed its firewall or was deleted. Why it is published: a node keeps its
 * siblings' records (pins) from its last full load, and a client that reuses a port starts a new connection on an
 * old record's key; a sibling that kept the old record would send the new connection's packets to the old firewall.
 */
export type TableEvent =
  | { type: 'epoch'; epoch: number }
  | { type: 'health'; node: string }
  | { type: 'resync'; node: string }
  | { type: 'admin'; node: string }
  | { type: 'moved'; ids: string[] };

/**
 * What the nodes agree through, apart from the sessions: one leader at a time publishes the epochs, every node its
 * health view and its hash config digest, any node an admin change; every key in the `{ctl}` slot, so each script
 * and MULTI touches one Redis Cluster slot.
 */
export class SharedControl {
  protected readonly r: RedisLike & Commands;
  readonly keys: ReturnType<typeof tableKeys>;

  constructor(
    redis: RedisLike,
    readonly node: string,
    readonly prefix: string,
  ) {
    this.keys = tableKeys(prefix);
    for (const [name, def] of Object.entries(SCRIPTS)) redis.defineCommand(name, def);
    this.r = redis as RedisLike & Commands;
  }

  protected get channel(): string {
    return this.keys.channel;
  }

  /** Take or renew the leader lock (true while this node holds it). */
  async lead(ttlMs: number): Promise<boolean> {
    return (await this.r.fwlbLock(this.keys.leader, this.node, ttlMs)) === 1;
  }

  /**
   * Publish a new bucket-table epoch, atomically and only while this node holds the leader lock (a leader whose
   * lock expired publishes nothing). Returns the document, or null when this node is not the leader or the document
   * was lost with the primary before it was announced (the leader publishes again at its next step).
   *
   * As an admin change, an epoch is announced once a replica holds it (WAIT, up to REPLICA_ACK_MS), where the primary
   * has one. Why: a node that applied an epoch the failover then lost ignores the promoted replica's older one, and
   * the leader's next epoch, numbered as the lost one, would look applied already to that node and new to the others.
   * A replica that does not answer in time delays the epoch by that long, and it is announced all the same.
   */
  async publishEpoch(
    members: string[],
    live: string[],
    down: string[] = [],
    now = Date.now(),
    joinAt?: number,
  ): Promise<(EpochDoc & { replicated: boolean | null }) | null> {
    const k = this.keys;
    const body = JSON.stringify({ members, live, down, by: this.node, at: now, ...(joinAt !== undefined ? { joinAt } : {}) });
    const candidate = `${this.node}-${now.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const write = (this.r.pipeline() as AdminPipeline).fwlbPublishEpoch(k.leader, k.epochCounter, k.epochGeneration, k.epoch, this.node, candidate, body);
    const [doc, role] = (await execAll(write.role())) as [string | null, unknown[]];
    const epoch = doc ? decodeEpoch(doc) : null;
    if (!doc || !epoch) return null;
    const replicas = replicasOf(role);
    const then = this.r.pipeline() as AdminPipeline;
    if (replicas) then.wait(1, REPLICA_ACK_MS);
    then.fwlbAnnounceEpoch(k.epoch, doc, k.channel, JSON.stringify({ type: 'epoch', epoch: epoch.epoch }));
    const answers = await execAll(then);
    if (Number(answers[answers.length - 1]) !== 1) return null;
    return { ...epoch, replicated: replicas ? Number(answers[0]) > 0 : null };
  }

  /**
   * The current epoch, or null when there is none or what Redis holds is not a valid epoch document of the current
   * generation (a forged or stale document is not applied).
   */
  async epoch(): Promise<EpochDoc | null> {
    const [v, gen] = await Promise.all([this.r.get(this.keys.epoch), this.r.get(this.keys.epochGeneration)]);
    const doc = v ? decodeEpoch(v) : null;
    return doc && doc.generation === gen ? doc : null;
  }

  /**
   * This node's view of each firewall, stamped with the time (views that are not refreshed go stale). `digest`:
   * the node's hash config digest, published beside its view so that nodes can compare.
   */
  async setHealthView(view: Record<string, boolean>, now = Date.now(), digest?: string): Promise<void> {
    const key = this.keys.health(this.node);
    const fields = {
      ...Object.fromEntries(Object.entries(view).map(([k, v]) => [k, v ? 'up' : 'down'])),
      _at: String(now),
      ...(digest ? { _cfg: digest } : {}),
    };
    await this.r.multi().del(key).hset(key, fields).sadd(this.keys.nodes, this.node).exec();
    await this.notify({ type: 'health', node: this.node });
  }

  /** Every node's view not older than `maxAgeMs`: node → firewall → up. */
  async healthViews(maxAgeMs = Infinity, now = Date.now()): Promise<Record<string, Record<string, boolean>>> {
    const nodes = await this.r.smembers(this.keys.nodes);
    const out: Record<string, Record<string, boolean>> = {};
    for (const n of nodes) {
      const { _at, _cfg: _, ...h } = await this.r.hgetall(this.keys.health(n));
      // A view without a valid time stamp is stale, never a veto (it may be a half-written or forged hash).
      const at = Number(_at);
      if (!Number.isFinite(at) || now - at > maxAgeMs) continue;
      out[n] = Object.fromEntries(
        Object.entries(h)
          .filter(([k, v]) => ID.test(k) && (v === 'up' || v === 'down'))
          .map(([k, v]) => [k, v === 'up']),
      );
    }
    return out;
  }

  /** Every node's hash config digest, from views not older than `maxAgeMs`; malformed digests are left out. */
  async configDigests(maxAgeMs = Infinity, now = Date.now()): Promise<Record<string, string>> {
    const nodes = await this.r.smembers(this.keys.nodes);
    const out: Record<string, string> = {};
    for (const n of nodes) {
      const [at, cfg] = await this.r.hmget(this.keys.health(n), '_at', '_cfg');
      if (!Number.isFinite(Number(at)) || now - Number(at) > maxAgeMs || !cfg || !/^[0-9a-f]{8,64}$/.test(cfg)) continue;
      out[n] = cfg;
    }
    return out;
  }

  /**
   * Share an admin change: the firewall takes new sessions (or stops) from `at` (ms since the epoch) on, on every
   * node. Returns the state in force: when the same change is already shared (an operator who sends it to every
   * node), its first time stands, so every node switches at the same moment.
   *
   * Where the primary has replicas, the change is announced and returned once one of them holds it (WAIT), for up to
   * REPLICA_ACK_MS: replication is asynchronous, and a change the primary took just before it died would otherwise
   * be lost with it after every node had been told, so that a node reading the shared state later (a restart) would
   * undo it on its own. A primary that dies first fails the call, and the caller shares the change again on the
   * promoted replica. A replica that does not answer in time delays the change by that long, and it is announced
   * anyway (`replicated: false`): the primary is up, and a slow replica must not stop the operator.
   */
  async setAdmin(id: string, enabled: boolean, at = 0): Promise<AdminShare> {
    const k = this.keys;
    const write = (this.r.pipeline() as AdminPipeline).fwlbSetAdmin(k.admin, id, enabled ? '1' : '0', String(Math.max(0, Math.floor(at))));
    const [v, role] = (await execAll(write.role())) as [string, unknown[]];
    const replicas = replicasOf(role);
    // The announce script checks the write is still there: after a failover, ioredis resends an unanswered pipeline
    // to the promoted replica, which may never have had it. Its key sends the pipeline, on a cluster, to the node of
    // the `{ctl}` slot, so WAIT counts the replicas of the node this connection wrote to.
    const then = this.r.pipeline() as AdminPipeline;
    if (replicas) then.wait(1, REPLICA_ACK_MS);
    then.fwlbAnnounceAdmin(k.admin, id, v, this.channel, JSON.stringify({ type: 'admin', node: this.node }));
    const answers = await execAll(then);
    if (Number(answers[answers.length - 1]) !== 1)
      throw new Error(`the admin change of ${id} is not what Redis holds now (lost with the primary, or replaced)`);
    return { ...(decodeAdmin(v) ?? { enabled, at }), replicated: replicas ? Number(answers[0]) > 0 : null };
  }

  /** The shared admin state, decoded strictly: ids as the configs allow them, values "0" or "1" with a time; anything else skipped. */
  async admin(): Promise<Record<string, AdminState>> {
    const h = await this.r.hgetall(this.keys.admin);
    const out: Record<string, AdminState> = {};
    for (const [k, v] of Object.entries(h)) {
      const a = ID.test(k) ? decodeAdmin(v) : null;
      if (a) out[k] = a;
    }
    return out;
  }

  notify(ev: TableEvent): Promise<number> {
    return this.r.publish(this.channel, JSON.stringify(ev));
  }

  /**
   * Subscribe on a second connection (a subscribed connection can do nothing else). Its commands queue until it
   * is connected, and ioredis subscribes again after every reconnect, so this works while Redis is away too. On a
   * cluster, a message published on any master reaches every node's subscribers. What is published while the
   * subscriber is away (a failover) is lost: `onSubscribed` runs after each subscription once it is confirmed, for
   * the caller to read again what it follows (on a cluster only the first: ioredis' Cluster moves its subscriber to
   * another node without an event, so a caller reads again periodically as well).
   */
  async subscribe(onEvent: (ev: TableEvent) => void, onSubscribed?: () => void): Promise<{ close(): void }> {
    // A subscriber sends nothing but its subscription: nothing to pipeline.
    const own = { enableOfflineQueue: true, enableAutoPipelining: false };
    const sub: RedisLike = this.r instanceof Cluster ? this.r.duplicate([], own) : this.r.duplicate(own);
    sub.on('error', () => undefined);
    sub.on('message', (_ch: string, msg: string) => {
      try {
        onEvent(JSON.parse(msg) as TableEvent);
      } catch {
        /* not ours */
      }
    });
    // Resolves once subscribed (a cluster client first learns the slot map), or after 2 s when Redis is away.
    const confirm = () =>
      sub.subscribe(this.channel).then(
        () => onSubscribed?.(),
        () => undefined,
      );
    const subscribed = confirm();
    await Promise.race([subscribed, new Promise((r) => setTimeout(r, 2000).unref())]);
    // ioredis subscribes again on every reconnect; subscribing once more (harmless) says when that is confirmed.
    void subscribed.then(() => sub.on('ready', () => void confirm()));
    return { close: () => sub.disconnect() };
  }
}
