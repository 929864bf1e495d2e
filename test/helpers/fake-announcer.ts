// Test helper: an Announcer's ports over a fake kernel table and a fake BIRD (for unit tests of its logic and of the
// API and fwlbctl over it).
import { readFileSync } from 'node:fs';
import type { AnnouncedRoute, AnnouncePlan } from '@fwlb/routing';
import type { DaemonPort } from '@fwlb/balancer';

/** An announcer over a fake kernel table and a fake daemon. */
export function fakes(peers: { name: string }[], o: { refuse?: string; table?: AnnouncedRoute[] } = {}) {
  let table: AnnouncedRoute[] = [...(o.table ?? [])];
  const applied: AnnouncePlan[] = [];
  const loaded: string[] = [];
  const log: string[] = [];
  const daemon: DaemonPort = {
    check: async (file) => (o.refuse && readFileSync(file, 'utf8').includes(o.refuse) ? `${file}:3:1 ${o.refuse} refused` : null),
    configure: async (file) => (loaded.push(readFileSync(file, 'utf8')), null),
    bfdSessions: async () => new Map(),
    protocols: async () => peers.map((p) => ({ name: `fwlb_${p.name}`, proto: 'BGP', state: 'up', since: '', info: 'Established', established: true })),
  };
  const rtnl = {
    announced: async () => table,
    applyAnnounce: async (_: number, plan: AnnouncePlan) => {
      applied.push(plan);
      table = [...table.filter((r) => !plan.del.some((d) => d.prefix === r.prefix && d.metric === r.metric)), ...plan.add];
      return [];
    },
  };
  return { daemon, rtnl, applied, loaded, log, table: () => table };
}
