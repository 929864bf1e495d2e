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
}

export interface ChurnResult {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  failedPorts: number[];
  /** When each failed connection started (ms since the epoch), to set beside `changedAt`. */
  failedAt: number[];
  toggles: number;
  moves: number;
  /** When each toggle and move began (ms since the epoch), for a test's message. */
  changedAt: number[];
  drops: number[];
  /** The longest a client's event loop ran late (see DriveReport.stallMs): failures beside a long stall may be the client's. */
  clientStallMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function churn(lab: Lab, o: ChurnOptions): Promise<ChurnResult> {
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const target = `${lab.t.vip}:${ECHO_PORT}`;
  const admin = (enabled: boolean) => lab.apiAll('PUT', `/firewalls/${o.firewall}/admin`, { enabled });
  lab.resetFirewallCounters();
  lab.clientPorts(o.ports);
  let running = true;
  let toggles = 0;
  const changedAt: number[] = [];
  let moves = 0;
  const t0 = Date.now();
  const toggler = (async () => {
    if (!o.toggleMs) return;
    let enabled = true;
    // On a fixed schedule: an admin change answers once it is in force (a second or two with a session table),
    // which must not stretch the interval.
    for (let k = 1; running; k++) {
      await sleep(Math.max(0, t0 + k * o.toggleMs - Date.now()));
      if (!running) break;
      enabled = !enabled;
      changedAt.push(Date.now());
      await admin(enabled);
      toggles++;
    }
  })();
  const mover = (async () => {
    if (!o.moves?.length) return;
    let i = 0;
    while (running) {
      await sleep(o.moveMs ?? 3000);
      if (!running) break;
      changedAt.push(Date.now());
      lab.setEcmp(o.moves[i++ % o.moves.length]);
      moves++;
    }
  })();
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
      failedAt: reports.flatMap((r) => r.short.failedAt),
      toggles,
      moves,
      changedAt,
      drops: lab.firewallCounters().map((f) => f.drops),
      clientStallMs: Math.max(...reports.map((r) => r.stallMs)),
    };
  } finally {
    running = false;
    await Promise.all([toggler, mover]);
    await admin(true);
    if (o.moves?.length) lab.setEcmp([]);
    lab.clientPorts(null);
  }
}
