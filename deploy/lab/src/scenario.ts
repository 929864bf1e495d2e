// The lab scenario: short, long-lived, UDP, ICMP and server-initiated traffic through the sandwich, and its report.
import { Lab, AGENT } from './lab';
import { ECHO_PORT, L7_PORT, L7_REQUESTS, l7Misrouted } from './topology';
import { spawnInNs } from './netns';
import { hostPort } from '@fwlb/flowhash';
import type { DriveReport, DriveSpec } from './agent';

export interface ScenarioOptions {
  shortPerClient?: number;
  longPerClient?: number;
  udpPerClient?: number;
  pingsPerTarget?: number;
  serverInitiatedPerServer?: number;
  /** HTTP requests per client to the L7 VIP (HAProxy), over the lab's table of hosts, paths and headers. */
  l7PerClient?: number;
  longDurationMs?: number;
  /** The families to send (default: IPv4, and IPv6 too with the lab's ipv6 option). */
  families?: ('ipv4' | 'ipv6')[];
  /** Called once the long-lived streams are running (for restart and failure tests). */
  during?: () => Promise<void>;
}

export interface ScenarioReport {
  firewalls: { id: string; sessions: number; share: number; drops: number }[];
  failed: { short: number; long: number; udp: number; icmp: number; serverInitiated: number; l7: number; total: number };
  /** The same, by address family (ipv6 only with the lab's ipv6 option). */
  byFamily: { ipv4?: ScenarioReport['failed']; ipv6?: ScenarioReport['failed'] };
  /** L7 requests answered by a server outside the pool their rule names. */
  l7Misrouted: string[];
  totals: { sessions: number; drops: number; connections: number };
  errors: Record<string, number>;
}

export function drive(lab: Lab, host: string, spec: DriveSpec): Promise<DriveReport> {
  return new Promise((resolve, reject) => {
    const p = spawnInNs(lab.ns(host), [process.execPath, AGENT, 'drive', JSON.stringify(spec)]);
    let out = '';
    let err = '';
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (err += d));
    // 'close', not 'exit': the process can end before its output is read.
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`drive in ${host} exited ${code}: ${err}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!));
      } catch (e) {
        reject(new Error(`drive in ${host}: bad report ${out} ${err}`));
      }
    });
  });
}

/** ICMP echo with the system ping; returns the number of echoes that got no reply. */
export function pingLost(lab: Lab, host: string, target: string, count: number): Promise<number> {
  return new Promise((resolve) => {
    const p = spawnInNs(lab.ns(host), ['ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '2', target]);
    let out = '';
    p.stdout!.on('data', (d) => (out += d));
    p.on('close', () => {
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
      resolve(m ? Number(m[1]) - Number(m[2]) : count);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Failed = ScenarioReport['failed'];

/** One family's workload: its drives and pings, started at once; the long-lived streams half a second earlier. */
async function familyWorkload(lab: Lab, o: ScenarioOptions, family: 'ipv4' | 'ipv6', started: () => void) {
  const clients = lab.t.hosts.filter((h) => h.role === 'client');
  const servers = lab.t.hosts.filter((h) => h.role === 'server');
  // Clients reach the servers only through the SLB's VIP of their family.
  const vip = family === 'ipv4' ? lab.t.vip : lab.t.vip6!;
  const serverTargets = [hostPort(vip, ECHO_PORT)];
  const clientTargets = clients.map((c) => hostPort(family === 'ipv4' ? c.addr! : c.addr6!, ECHO_PORT));
  const longMs = o.longDurationMs ?? 8000;
  const longs = clients.map((c) => drive(lab, c.name, { long: { targets: serverTargets, count: o.longPerClient ?? 10, durationMs: longMs, intervalMs: 100 } }));
  await sleep(500);
  started();
  const shorts = clients.map((c) =>
    drive(lab, c.name, {
      short: { targets: serverTargets, count: o.shortPerClient ?? 500, concurrency: 16 },
      udp: { targets: serverTargets, flows: o.udpPerClient ?? 50 },
      http: { targets: [hostPort(vip, L7_PORT)], count: o.l7PerClient ?? 120, concurrency: 8, requests: L7_REQUESTS },
    }),
  );
  const inbound = servers.map((s) => drive(lab, s.name, { short: { targets: clientTargets, count: o.serverInitiatedPerServer ?? 100, concurrency: 8 } }));
  const pings = clients.map((c) => pingLost(lab, c.name, vip, o.pingsPerTarget ?? 3));
  const [l, sh, i, p] = await Promise.all([Promise.all(longs), Promise.all(shorts), Promise.all(inbound), Promise.all(pings)]);
  const failed: Failed = {
    short: sh.reduce((a, r) => a + r.short.failed, 0),
    long: l.reduce((a, r) => a + r.long.broken, 0),
    udp: sh.reduce((a, r) => a + r.udp.failed, 0),
    icmp: p.reduce((a, n) => a + n, 0),
    serverInitiated: i.reduce((a, r) => a + r.short.failed, 0),
    l7: sh.reduce((a, r) => a + r.http.failed, 0),
    total: 0,
  };
  failed.total = failed.short + failed.long + failed.udp + failed.icmp + failed.serverInitiated + failed.l7;
  const reports = [...l, ...sh, ...i];
  const connections =
    reports.reduce((a, r) => a + r.short.ok + r.short.failed + r.long.ok + r.long.broken + r.udp.ok + r.udp.failed + r.http.ok + r.http.failed, 0) +
    p.length * (o.pingsPerTarget ?? 3);
  return { failed, connections, reports, misrouted: sh.flatMap((r) => l7Misrouted(r.http.byLabel)) };
}

/** The scenario: IPv4, and with the lab's ipv6 option IPv6 at the same time. */
export async function runScenario(lab: Lab, o: ScenarioOptions = {}): Promise<ScenarioReport> {
  const families = o.families ?? (lab.t.opts.ipv6 ? ['ipv4', 'ipv6'] : ['ipv4']);
  lab.resetFirewallCounters();
  let started = 0;
  let allStarted!: () => void;
  const ready = new Promise<void>((res) => (allStarted = res));
  const runs = families.map((f) => familyWorkload(lab, o, f, () => ++started === families.length && allStarted()));
  await Promise.race([ready, Promise.all(runs)]);
  const duringP = o.during ? o.during() : Promise.resolve();
  const [results] = await Promise.all([Promise.all(runs), duringP]);
  const fw = lab.firewallCounters();
  const sessions = fw.reduce((a, f) => a + f.newSessions, 0);
  const errors: Record<string, number> = {};
  for (const r of results.flatMap((x) => x.reports))
    for (const [k, v] of Object.entries({ ...r.short.errors, ...r.long.errors, ...r.http.errors })) errors[k] = (errors[k] ?? 0) + v;
  const sum = (k: keyof Failed) => results.reduce((a, r) => a + r.failed[k], 0);
  const failed: Failed = {
    short: sum('short'),
    long: sum('long'),
    udp: sum('udp'),
    icmp: sum('icmp'),
    serverInitiated: sum('serverInitiated'),
    l7: sum('l7'),
    total: sum('total'),
  };
  return {
    firewalls: fw.map((f) => ({ id: f.id, sessions: f.newSessions, share: sessions ? f.newSessions / sessions : 0, drops: f.drops })),
    failed,
    byFamily: Object.fromEntries(families.map((f, i) => [f, results[i].failed])),
    l7Misrouted: results.flatMap((r) => r.misrouted),
    totals: { sessions, drops: fw.reduce((a, f) => a + f.drops, 0), connections: results.reduce((a, r) => a + r.connections, 0) },
    errors,
  };
}

export function formatReport(r: ScenarioReport): string {
  const lines = ['firewall  sessions  share   drops'];
  for (const f of r.firewalls)
    lines.push(`${f.id.padEnd(9)} ${String(f.sessions).padStart(8)}  ${(f.share * 100).toFixed(1).padStart(5)}%  ${String(f.drops).padStart(6)}`);
  lines.push(`total     ${String(r.totals.sessions).padStart(8)}          ${String(r.totals.drops).padStart(6)}`);
  lines.push(
    `failed: ${r.failed.total} (short ${r.failed.short}, long-lived ${r.failed.long}, udp ${r.failed.udp}, icmp ${r.failed.icmp}, server-initiated ${r.failed.serverInitiated}, L7 ${r.failed.l7}) of ${r.totals.connections}`,
  );
  const v6 = r.byFamily.ipv6;
  if (v6)
    lines.push(
      `of which IPv6: ${v6.total} (short ${v6.short}, long-lived ${v6.long}, udp ${v6.udp}, icmpv6 ${v6.icmp}, server-initiated ${v6.serverInitiated}, L7 ${v6.l7})`,
    );
  lines.push(`L7 requests misrouted: ${r.l7Misrouted.length}${r.l7Misrouted.length ? ` ${JSON.stringify(r.l7Misrouted)}` : ''}`);
  if (Object.keys(r.errors).length) lines.push(`errors: ${JSON.stringify(r.errors)}`);
  return lines.join('\n');
}
