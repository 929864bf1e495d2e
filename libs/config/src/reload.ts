// What a running balancer node may take from a re-read config file without a restart; pure layer of libs/config.
import type { FieldProblem } from './errors';
import type { ResolvedBalancerConfig } from './validate';

/**
 * Keys a reload refuses to change, and why: each is wired into what the node opened at start (its API socket, its
 * Redis, its announcements, its SLB), or changes where every flow hashes (the hash), or renumbers the kernel objects
 * live connections use (the ranges).
 */
const RESTART_ONLY: Record<string, string> = {
  role: 'the node’s side',
  name: 'the node’s name in the shared table',
  sideInterface: 'the interface every rule matches',
  hash: 'every flow’s bucket (all nodes restart together with a new seed, count or order)',
  marks: 'the marks live connections carry',
  tables: 'the routing tables live connections use',
  rulePriorities: 'the ip rules live connections use',
  ingressLearning: 'the learning rules',
  api: 'the API’s socket and token',
  sessionTable: 'the connection to Redis',
  bgp: 'the announcements',
  slb: 'the embedded SLB',
  stateFile: 'where the admin state is kept',
};

/**
 * Why `next` cannot replace `running` in place (empty: it can). Besides the restart-only keys and adding or removing
 * the health section, the firewall list may change only at its end: the firewalls that stay keep their order and
 * come first, those removed are the last ones, those added come after. Why: a firewall's mark, routing table and
 * rule priority follow its position, and the bucket table joins the firewalls in list order, so a change at the end
 * renumbers nothing and moves no bucket between the firewalls that stay (an added one takes buckets only once every
 * node has it and sees it up; a removed one must have been disabled, see the node's reload).
 */
export function reloadProblems(running: ResolvedBalancerConfig, next: ResolvedBalancerConfig): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  for (const [key, what] of Object.entries(RESTART_ONLY)) {
    const k = key as keyof ResolvedBalancerConfig;
    if (!same(running[k], next[k])) problems.push({ field: `/${key}`, message: `changes ${what}: it takes a restart, not a reload` });
  }
  if ((running.health === null) !== (next.health === null))
    problems.push({ field: '/health', message: `${running.health ? 'removing' : 'adding'} the health section takes a restart, not a reload` });
  const was = running.firewalls.map((f) => f.id);
  const now = next.firewalls.map((f) => f.id);
  const kept = was.filter((id) => now.includes(id));
  was.forEach((id, i) => {
    if (i < kept.length && id !== kept[i])
      problems.push({
        field: '/firewalls',
        message: `${id} is removed before firewalls that stay (${kept.slice(i).join(', ')}): only the last ones can be removed (a firewall's mark, table and share of the buckets follow its position)`,
      });
  });
  now.forEach((id, i) => {
    if (i >= kept.length || id === kept[i]) return;
    problems.push({
      field: `/firewalls/${i}/id`,
      message: was.includes(id)
        ? `${id} moves from position ${was.indexOf(id)} to ${i}: the firewalls that stay keep their order (a firewall's mark, table and share of the buckets follow its position)`
        : `${id} is added before firewalls that stay: add new firewalls at the end of the list (its position gives its mark, table and share of the buckets)`,
    });
  });
  return dedupe(problems);
}

function dedupe(ps: FieldProblem[]): FieldProblem[] {
  const seen = new Set<string>();
  return ps.filter((p) => (seen.has(p.field) ? false : (seen.add(p.field), true)));
}
