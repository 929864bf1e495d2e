// Lab traffic like a network's: clients that reuse their source ports within seconds (a CGNAT) while graceful changes
// happen (a firewall leaves and rejoins new sessions by the API; with several nodes per side, the routers move flows
// between the nodes). Every connection must work and no firewall may drop a packet. Used by tests and bench/port-reuse.
import { drive } from './scenario';
import { ECHO_PORT } from './topology';
import type { Lab } from './lab';

export interface ChurnOptions {
  /** Source ports per client. */
  ports: number;
  /** New connections per client. */
  count: number;
  /** One new connection every intervalMs per client. */
  intervalMs: number;
  /** The firewall taken out of new sessions and put back, every toggleMs (0: never). */
  firewall: string;
  toggleMs: number;
  /** Node groups the routes cycle through (each a list of node names; [] is every node), every moveMs. */
  moves?: string[][];
  moveMs?: number;
  /** Faults of the test's own (a controller restarted, Redis failed over), each on its own schedule. */
  faults?: PeriodicFault[];
}

/**
 * Something that happens every `everyMs` during the churn: `run(k, note)` for k = 1, 2, ..., never two at once;
 * `note` adds a step of its own to the result's events.
 */
export interface PeriodicFault {
  name: string;
  everyMs: number;
  run(k: number, note: (what: string) => void): Promise<void>;
}

export interface ChurnResult {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  failedPorts: number[];
  /** The failed connections' client ends, `198.51.100.11:40033`, in the order of `failedAt`. */
  failedFlows: string[];
  /** When each failed connection started (ms since the epoch), to set beside `events`. */
  failedAt: number[];
  toggles: number;
  /** How long each toggle's admin change took to be answered by every node (ms): each answers once it is in force. */
  toggleMs: number[];
  /**
   * The seconds the nodes switched bucket tables at (ms since the epoch), one per toggle as the nodes that answered
   * gave it (`enabledAt`); several for one toggle when they disagreed.
   */
  switches: number[];
  moves: number;
  /** Each toggle, move and fault as it began (ms since the epoch), for a test's message. */
  events: { at: number; what: string }[];
  /** How many times each of `faults` ran, by name. */
  faults: Record<string, number>;
  /** Admin changes a node refused or could not take (its controller was down, Redis was failing over): "node: why". */
  adminRefusals: string[];
  drops: number[];
  /** The longest a client's event loop ran late (see DriveReport.stallMs): failures beside a long stall may be the client's. */
  clientStallMs: number;
}

export async function churn(lab: Lab, o: ChurnOptions): Promise<ChurnResult> {
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const adminRefusals: string[] = [];
  // The switch seconds the nodes' answers name (see ChurnResult.switches).
  const switches = new Set<number>();
  // Sent to every node, as an operator would; a node that is down or refuses says why, and the others go on.
  const admin = async (enabled: boolean) => {
    for (const a of await lab.apiEach('PUT', `/firewalls/${o.firewall}/admin`, { enabled })) {
      if ('error' in a) adminRefusals.push(`${a.node}: ${a.error.message}`);
      else if (a.status !== 200) adminRefusals.push(`${a.node}: ${a.status} ${JSON.stringify(a.body)}`);
      else if (typeof a.body?.enabledAt === 'number') switches.add(a.body.enabledAt);
    }
  };
  lab.resetFirewallCounters();
  lab.clientPorts(o.ports);
  let running = true;
  // The schedules wait on `nap`, which the end of the traffic cuts short: a fault due long after it must not hold it up.
  const naps = new Set<() => void>();
  const nap = (ms: number) =>
    new Promise<void>((r) => {
      const wake = () => (clearTimeout(timer), naps.delete(wake), r());
      const timer = setTimeout(wake, ms);
      naps.add(wake);
    });
  let toggles = 0;
  const toggleMs: number[] = [];
  const events: { at: number; what: string }[] = [];
  const began = (what: string) => events.push({ at: Date.now(), what });
  let moves = 0;
  const t0 = Date.now();
  const toggler = (async () => {
    if (!o.toggleMs) return;
    let enabled = true;
    // On a fixed schedule: an admin change answers once it is in force (a second or two with a session table),
    // which must not stretch the interval.
    for (let k = 1; running; k++) {
      await nap(Math.max(0, t0 + k * o.toggleMs - Date.now()));
      if (!running) break;
      enabled = !enabled;
      began(`${o.firewall} ${enabled ? 'in' : 'out'}`);
      const t1 = Date.now();
      await admin(enabled);
      toggleMs.push(Date.now() - t1);
      toggles++;
    }
  })();
  const mover = (async () => {
    if (!o.moves?.length) return;
    let i = 0;
    while (running) {
      await nap(o.moveMs ?? 3000);
      if (!running) break;
      const via = o.moves[i++ % o.moves.length];
      began(`routes via ${via.length ? via.join(' ') : 'every node'}`);
      lab.setEcmp(via);
      moves++;
    }
  })();
  const faultCounts: Record<string, number> = {};
  const faulters = (o.faults ?? []).map(async (f) => {
    faultCounts[f.name] = 0;
    for (let k = 1; running; k++) {
      await nap(Math.max(0, t0 + k * f.everyMs - Date.now()));
      if (!running) break;
      began(`${f.name} #${k}`);
      await f.run(k, began);
      faultCounts[f.name]++;
    }
  });
  try {
    const reports = await Promise.all(
      clients.map((c) => drive(lab, c.name, { short: { targets: [target], count: o.count, concurrency: 0, intervalMs: o.intervalMs, timeoutMs: 5000 } })),
    );
    const errors: Record<string, number> = {};
    for (const r of reports) for (const [k, v] of Object.entries(r.short.errors)) errors[k] = (errors[k] ?? 0) + v;
    return {
      ok: reports.reduce((a, r) => a + r.short.ok, 0),
      failed: reports.reduce((a, r) => a + r.short.failed, 0),
      errors,
      failedPorts: reports.flatMap((r) => r.short.failedPorts),
      failedFlows: reports.flatMap((r, i) => r.short.failedPorts.map((p) => `${clients[i].addr}:${p}`)),
      failedAt: reports.flatMap((r) => r.short.failedAt),
      toggles,
      toggleMs,
      switches: [...switches].sort((a, b) => a - b),
      moves,
      events,
      faults: faultCounts,
      adminRefusals,
      drops: lab.firewallCounters().map((f) => f.drops),
      clientStallMs: Math.max(...reports.map((r) => r.stallMs)),
    };
  } finally {
    running = false;
    for (const wake of [...naps]) wake();
    await Promise.all([toggler, mover, ...faulters]);
    await admin(true);
    if (o.moves?.length) lab.setEcmp([]);
    lab.clientPorts(null);
  }
}
