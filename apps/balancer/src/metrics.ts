// The balancer node's Prometheus metrics: read from their owners (membership, reconciler, session sync) at scrape
// time, plus histograms of reconciles and health checks; labels are bounded (firewall, kind, result), never a
// session. Shell layer of apps/balancer.
import type { ProbeResult } from '@fwlb/health';
import { conntrackUse } from '@fwlb/conntrack';
import type { Announcer } from './announcer';
import { counterFrom, gaugeFrom, Histogram, Registry } from '@fwlb/service';
import type { Reconciler } from './reconciler';

export interface BalancerMetricSources {
  reconciler: Reconciler;
  /** The session sync's metrics (with a session table). */
  sync?: () => Record<string, unknown>;
  alarms?: () => string[];
  helperUp?: () => boolean;
  /** The node's BGP announcements (a bgp section). */
  announcer?: Pick<Announcer, 'status'>;
}

export interface BalancerMetrics {
  /** Feed every health check result here (firewall-health's onResult). */
  observeCheck(firewall: string, r: ProbeResult): void;
}

const b = (v: boolean) => (v ? 1 : 0);

export function balancerMetrics(reg: Registry, s: BalancerMetricSources): BalancerMetrics {
  const r = s.reconciler;
  firewallMetrics(reg, r);
  nodeMetrics(reg, s);
  if (s.announcer) bgpMetrics(reg, s.announcer);
  if (s.sync) sessionMetrics(reg, s.sync);
  const checks = new Histogram({
    name: 'fwlb_health_check_duration_seconds',
    help: 'Latency of the firewall health checks that got an answer.',
    labelNames: ['firewall'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5],
    registers: [reg],
  });
  const tally = new Map<string, number>();
  counterFrom(
    reg,
    'fwlb_health_checks_total',
    'Firewall health checks, by result (ok, failed, unknown: the probe could not run).',
    ['firewall', 'result'],
    () => [...tally].map(([k, v]) => [JSON.parse(k), v]),
  );
  return {
    observeCheck(firewall, res) {
      const result = res.unknown ? 'unknown' : res.ok ? 'ok' : 'failed';
      const k = JSON.stringify({ firewall, result });
      tally.set(k, (tally.get(k) ?? 0) + 1);
      if (!res.unknown && res.latencyMs !== undefined) checks.observe({ firewall }, res.latencyMs / 1000);
    },
  };
}

type Firewall = ReturnType<Reconciler['firewalls']>[number];
/** How long a scrape's list of firewalls is reused by its other metric families. */
const SCRAPE_MEMO_MS = 250;

/** Per firewall: its state as the node sees it, its buckets, its traffic (the kernel's counters, listed for the scrape). */
function firewallMetrics(reg: Registry, r: Reconciler): void {
  // One list per scrape, not one per metric family: with a session table, each list counts the sessions of every
  // firewall over the buckets. A scrape renders its families within this time; a reconcile pass (a change) ends it.
  let memo: { at: number; list: Firewall[] } | null = null;
  r.events.on('reconciled', () => (memo = null));
  const fw = () => {
    const now = Date.now();
    if (!memo || now - memo.at > SCRAPE_MEMO_MS) memo = { at: now, list: r.firewalls() };
    return memo.list;
  };
  const perFw = (f: (x: Firewall) => number) => () => fw().map((x) => [{ firewall: x.id }, f(x)] as [{ firewall: string }, number]);
  // name, help, value: the gauges, then the counters.
  const gauges: [string, string, (x: Firewall) => number][] = [
    ['fwlb_firewall_live', 'Firewall takes new sessions in the kernel now (1) or not (0).', (x) => b(x.live)],
    ['fwlb_firewall_healthy', "This node's probes see the firewall up.", (x) => b(x.healthy)],
    ['fwlb_firewall_link_up', "This node's own link to the firewall is up.", (x) => b(x.link)],
    ['fwlb_firewall_admin_enabled', 'Administrative state (1 enabled).', (x) => b(x.enabled)],
    ['fwlb_firewall_buckets', 'Buckets of the hash table the firewall owns in the kernel.', (x) => x.buckets],
  ];
  for (const [name, help, f] of gauges) gaugeFrom(reg, name, help, ['firewall'], perFw(f));
  gaugeFrom(reg, 'fwlb_firewall_sessions', "Sessions on the firewall in the shared session table, every node's (with a session table).", ['firewall'], () =>
    fw().flatMap((x) => (x.sessions === null ? [] : [[{ firewall: x.id }, x.sessions] as [{ firewall: string }, number]])),
  );
  const counters: [string, string, (x: Firewall) => number][] = [
    [
      'fwlb_firewall_nat_pool_packets_total',
      'Packets from the side sent to the firewall because they were addressed to its NAT pools.',
      (x) => x.natPool?.packets ?? 0,
    ],
    [
      'fwlb_firewall_learned_packets_total',
      'Packets that taught this node a flow arrived from the firewall (ingress learning).',
      (x) => x.learned?.packets ?? 0,
    ],
    [
      'fwlb_firewall_relearned_packets_total',
      "Packets from the firewall of flows this node had on another firewall, which then moved to it (the firewall's state wins a node's guess).",
      (x) => x.relearned?.packets ?? 0,
    ],
    ['fwlb_firewall_sent_packets_total', 'Packets of established flows this node sent to the firewall (restored to it).', (x) => x.sent?.packets ?? 0],
    ['fwlb_firewall_sent_bytes_total', 'Bytes of established flows this node sent to the firewall (restored to it).', (x) => x.sent?.bytes ?? 0],
    ['fwlb_firewall_new_flows_total', 'New flows this node hashed to the firewall (a SYN, or the first packet of a flow).', (x) => x.newFlows?.packets ?? 0],
  ];
  for (const [name, help, f] of counters) counterFrom(reg, name, help, ['firewall'], perFw(f));
  gaugeFrom(reg, 'fwlb_firewall_agreed', 'In the applied epoch every node sees the firewall up (1 without a session table).', ['firewall'], () => {
    const a = r.agreement();
    return fw().map((x) => [{ firewall: x.id }, a ? b(a.live.includes(x.id)) : 1]);
  });
  counterFrom(reg, 'fwlb_steered_packets_total', 'Packets steered from the side interface, by rule kind.', ['kind'], () => {
    const c = r.ruleCounters();
    return [
      [{ kind: 'restore' }, c.restored?.packets ?? 0],
      [{ kind: 'restore_heard' }, c.restoredHeard?.packets ?? 0],
      [{ kind: 'pinned' }, c.pinned?.packets ?? 0],
      [{ kind: 'hash_syn' }, c.hashedSyn?.packets ?? 0],
      [{ kind: 'hash_tcp_udp' }, c.hashedTcpUdp?.packets ?? 0],
      [{ kind: 'hash_other' }, c.hashedOther?.packets ?? 0],
      [{ kind: 'dropped_no_firewall' }, c.droppedNoFirewall?.packets ?? 0],
    ];
  });
}

/** The node: pins, panic, conntrack, alarms, the epoch, the probe helper, its reconcile passes. */
function nodeMetrics(reg: Registry, s: BalancerMetricSources): void {
  const r = s.reconciler;
  gaugeFrom(reg, 'fwlb_pins', 'Sessions pinned in the kernel map (exceptions to the bucket table).', [], () => [[{}, r.pinCount() ?? 0]]);
  gaugeFrom(reg, 'fwlb_panic', 'This node is in panic mode (1): its probes are not believed.', [], () => [[{}, b(r.membership.snapshot().panic !== null)]]);
  gaugeFrom(reg, 'fwlb_conntrack_entries', "Entries in this node's conntrack table (read at scrape time).", [], () => [[{}, conntrackUse()?.count ?? 0]]);
  gaugeFrom(reg, 'fwlb_conntrack_max', "Size of this node's conntrack table (net.netfilter.nf_conntrack_max).", [], () => [[{}, conntrackUse()?.max ?? 0]]);
  gaugeFrom(reg, 'fwlb_alarms', 'Alarms raised now (see GET /health).', [], () => [[{}, s.alarms?.().length ?? 0]]);
  gaugeFrom(reg, 'fwlb_epoch', 'The applied bucket-table epoch (0 without one).', [], () => [[{}, r.agreement()?.epoch ?? 0]]);
  if (s.helperUp) gaugeFrom(reg, 'fwlb_probe_helper_up', 'The probe helper process answers (1).', [], () => [[{}, b(s.helperUp!())]]);
  counterFrom(reg, 'fwlb_reconciles_total', 'Reconcile passes, by result.', ['result'], () => [
    [{ result: 'ok' }, r.reconciles - r.failures],
    [{ result: 'failed' }, r.failures],
  ]);
  const recon = new Histogram({
    name: 'fwlb_reconcile_duration_seconds',
    help: 'Duration of a reconcile pass (read, diff, one nft transaction, routes).',
    labelNames: ['result'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [reg],
  });
  r.events.on('reconciled', (sec, ok) => recon.observe({ result: ok ? 'ok' : 'failed' }, sec));
}

/** The node's BGP announcements and sessions (a bgp section). */
function bgpMetrics(reg: Registry, a: Pick<Announcer, 'status'>): void {
  gaugeFrom(
    reg,
    'fwlb_bgp_announce_state',
    "This node's announcements: 1 for the state they are in (fit, drained: less preferred, unfit: least).",
    ['state'],
    () => (['fit', 'drained', 'unfit'] as const).map((st) => [{ state: st }, b(a.status().state === st)]),
  );
  gaugeFrom(reg, 'fwlb_bgp_session_established', 'The BGP session to the peer is established (1).', ['peer'], () =>
    a.status().peers.map((p) => [{ peer: p.name }, b(p.established)]),
  );
  gaugeFrom(reg, 'fwlb_bfd_session_up', 'The BFD session to the peer is up (1); peers without BFD are not listed.', ['peer'], () =>
    a
      .status()
      .peers.filter((p) => p.bfd !== null)
      .map((p) => [{ peer: p.name }, b(p.bfd === 'Up')]),
  );
  gaugeFrom(reg, 'fwlb_bgp_daemon_up', 'The routing daemon answers on its control socket (1).', [], () => [[{}, b(a.status().daemon.running)]]);
}

/** The session table: what the sync wrote and holds, and whether Redis answers. */
function sessionMetrics(reg: Registry, sync: () => Record<string, unknown>): void {
  const num = (k: string) => () => [[{}, Number(sync()[k] ?? 0)]] as [Record<string, string>, number][];
  counterFrom(reg, 'fwlb_session_sync_written_total', 'Session records written to Redis.', [], num('written'));
  counterFrom(reg, 'fwlb_session_sync_deleted_total', 'Session records deleted (the session ended).', [], num('deleted'));
  counterFrom(reg, 'fwlb_session_sync_graced_total', 'Session records moved to grace (destroyed without an end).', [], num('graced'));
  counterFrom(reg, 'fwlb_session_sync_write_errors_total', 'Failed writes to Redis (the next re-sync catches up).', [], num('writeErrors'));
  counterFrom(reg, 'fwlb_session_sync_resyncs_total', 'Full re-syncs from a conntrack dump.', [], num('resyncs'));
  counterFrom(reg, 'fwlb_conntrack_event_overruns_total', 'Times the kernel dropped conntrack events (the event socket overran).', [], num('eventOverruns'));
  counterFrom(reg, 'fwlb_session_records_rejected_total', 'Records read back from Redis that did not decode.', [], num('rejectedRecords'));
  counterFrom(
    reg,
    'fwlb_conntrack_stale_deleted_total',
    'Conntrack entries of earlier connections deleted because a new connection took their tuple on another firewall.',
    [],
    num('staleEntriesDeleted'),
  );
  counterFrom(
    reg,
    'fwlb_conntrack_later_kept_total',
    "Records of a new connection on another firewall left alone because this node's entry on the tuple is a still later connection's.",
    [],
    num('laterEntriesKept'),
  );
  gaugeFrom(reg, 'fwlb_session_cache_entries', 'Sessions this node keeps for its pins.', [], num('cached'));
  gaugeFrom(reg, 'fwlb_session_sync_pending', 'Session records waiting for the next write to Redis (a backlog is sync lag).', [], num('pending'));
  gaugeFrom(
    reg,
    'fwlb_hash_config_differs',
    'Another node publishes a different hash config (seed, buckets, order or firewalls): 1.',
    [],
    num('hashConfigDiffers'),
  );
  gaugeFrom(reg, 'fwlb_redis_up', 'The Redis connection is ready (1).', [], () => [[{}, b(sync().redis === 'ready')]]);
}
