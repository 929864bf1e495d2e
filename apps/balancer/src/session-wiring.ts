// Starts layer 3 for a node: Redis client, session table, conntrack event stream and the sync between them; shell
// layer of apps/balancer (the only place that wires libs/conntrack and libs/session-table together).
import type { ResolvedBalancerConfig } from '@fwlb/config';
import { ConntrackEvents, dumpConntrack } from '@fwlb/conntrack';
import { connect, SessionQuery, SessionRecord, SessionTable } from '@fwlb/session-table';
import { slots } from './render';
import { SessionSync, tracked } from './session-sync';

/** What the API serves about sessions. */
export interface SessionsView {
  query(q: SessionQuery): Promise<SessionRecord[]>;
  count(): Promise<{ redis: number | null; kernel: number; redisError?: string }>;
  metrics(): Record<string, unknown>;
}

export function startSessions(config: ResolvedBalancerConfig, log: (m: string) => void): { view: SessionsView; stop(): void } | null {
  const st = config.sessionTable;
  if (!st) return null;
  const redis = connect({ ...st, node: config.name });
  redis.on('error', () => undefined); // reconnects by itself; the sync logs what matters
  const table = new SessionTable(redis, config.name, st.keyPrefix);
  const byMark = new Map(slots(config).map((s) => [s.mark, s.id]));
  const firewallOf = (mark: number) => byMark.get(mark);
  const sync = new SessionSync({ node: config.name, firewallOf, store: table, dump: dumpConntrack, flushMs: st.flushMs, resyncMs: st.resyncSeconds * 1000, log });
  const events = ConntrackEvents.open({ onEvents: (b) => sync.onEvents(b), onLoss: () => void sync.resync('conntrack events were lost') });
  redis.on('ready', () => void sync.resync('Redis connected'));
  sync.start();
  const kernelCount = async () => (await dumpConntrack()).filter((e) => tracked(e, firewallOf)).length;
  return {
    view: {
      query: (q) => table.query(q),
      count: async () => {
        const kernel = await kernelCount();
        try {
          return { redis: await table.count(), kernel };
        } catch (e) {
          return { redis: null, kernel, redisError: (e as Error).message };
        }
      },
      metrics: () => ({ ...sync.metrics, events: events.events, eventOverruns: events.overruns, redis: redis.status }),
    },
    stop() {
      sync.stop();
      events.close();
      redis.disconnect();
    },
  };
}
