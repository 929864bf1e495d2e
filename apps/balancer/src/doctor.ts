// `fwlb doctor`: detects the kernel features fwlb needs and says what is missing; shell layer of apps/balancer.
import { spawnSync } from 'node:child_process';
import { ctTimeoutText, nftCli } from '@fwlb/nft';
import { probeHelperRunnable } from '@fwlb/health';
import { Rtnl } from '@fwlb/routing';
import { conntrackAdvice, conntrackUse } from '@fwlb/conntrack';
import { BALANCER_DEFAULTS, ResolvedBgp, TIME_WAIT_ADVICE_SECONDS } from '@fwlb/config';
import { birdProtocol } from '@fwlb/routing';
import { birdPort } from './announcer';
import { CT_EVENTS } from './render';
import { Check, ipForwardCheck, sysctl, sysctlOnCheck } from '@fwlb/service';

export { Check, formatChecks } from '@fwlb/service';

const probeTable = 'fwlb_doctor';

const t = { family: 'inet', table: probeTable };
/** The key of the probe's flow set: the source address and port, as the `heard` and `synseen` sets key flows. */
const flowKey = { concat: [{ payload: { protocol: 'ip', field: 'saddr' } }, { payload: { protocol: 'th', field: 'sport' } }] };
const rule = (chain: string, expr: unknown[]) => ({ add: { rule: { ...t, chain, expr } } });
const setMark = (value: unknown) => ({ mangle: { key: { meta: { key: 'mark' } }, value } });

/** A SYN chain's statements: conntrack refused the packet (`ct state invalid`), so its flow leaves a set. */
const synChain = [
  { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'invalid' } },
  { set: { op: 'delete', elem: flowKey, set: '@h' } },
  { return: null },
];

/** The steering statements: a local destination, no ct mark yet, hashed into a bucket map, learned, recorded. */
const steering = [
  { match: { op: '==', left: { fib: { result: 'type', flags: ['daddr'] } }, right: 'local' } },
  { match: { op: '==', left: { ct: { key: 'mark' } }, right: 0 } },
  setMark({ jhash: { mod: 7, seed: 1, expr: flowKey } }),
  setMark({ map: { key: { meta: { key: 'mark' } }, data: '@b' } }),
  { mangle: { key: { ct: { key: 'mark' } }, value: { meta: { key: 'mark' } } } },
  { mangle: { key: { ct: { key: 'label' } }, value: 1 } },
  { mangle: { key: { ct: { key: 'event' } }, value: CT_EVENTS } },
  { set: { op: 'update', elem: flowKey, set: '@h' } },
  // Each firewall's counters, by mark through a named map of counters.
  { counter: { map: { key: { meta: { key: 'mark' } }, data: '@c' } } },
  // The switch of bucket maps at an agreed second (meta time, kernel 5.4).
  { match: { op: '<', left: { meta: { key: 'time' } }, right: 1 } },
];

/** A table using every nft feature the data plane renders: jhash with seed, mark maps, ct mark, fib. Checked with `nft -c`, never committed. */
function probeCommands(): unknown[] {
  return [
    { add: { table: { family: 'inet', name: probeTable } } },
    { add: { map: { ...t, name: 'b', type: 'mark', map: 'mark' } } },
    { add: { counter: { ...t, name: 'n' } } },
    { add: { map: { ...t, name: 'c', type: 'mark', map: 'counter' } } },
    { add: { element: { ...t, name: 'c', elem: [[1, 'n']] } } },
    { add: { set: { ...t, name: 'h', type: ['ipv4_addr', 'inet_service'], flags: ['timeout'], timeout: 30, size: 1024 } } },
    // A regular chain reached by jump, as the SYN chains are.
    { add: { chain: { ...t, name: 's' } } },
    rule('s', synChain),
    { add: { chain: { ...t, name: 'p', type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept' } } },
    rule('p', [{ match: { op: 'in', left: { payload: { protocol: 'tcp', field: 'flags' } }, right: 'syn' } }, { jump: { target: 's' } }]),
    rule('p', steering),
  ];
}

type DoctorOptions = {
  interfaces?: string[];
  health?: boolean;
  conntrackAlarmRatio?: number;
  siblings?: boolean;
  ipv6?: boolean;
  handshakeTimeoutSeconds?: number;
  bgp?: ResolvedBgp | null;
};

/**
 * `siblings`: the node has a session table, so it may have siblings on its side (then TIME_WAIT matters). `ipv6`:
 * the firewalls have IPv6 next hops, so the node must forward IPv6.
 */
export async function doctor(opts: DoctorOptions = {}): Promise<Check[]> {
  return [
    ...(opts.bgp ? await bgpChecks(opts.bgp) : []),
    ...(await nftChecks(opts)),
    ...conntrackChecks(opts),
    ...(await routingChecks(opts)),
    ...(await probeChecks(opts)),
  ];
}

/** nft itself, the kernel's nf_tables features fwlb's table uses, and the handshake timeout policies. */
async function nftChecks(opts: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = [];
  const v = spawnSync('nft', ['--version'], { encoding: 'utf8' });
  checks.push({
    name: 'nft binary',
    ok: v.status === 0,
    required: true,
    detail: v.status === 0 ? v.stdout.trim() : 'nft not found: install the nftables package',
  });
  if (v.status === 0) {
    try {
      await nftCli().check(probeCommands());
      checks.push({
        name: 'nf_tables: jhash seed, mark maps, maps of counters, ct mark/label/event/state, fib, timeout sets updated and deleted from rules, jumps, meta time',
        ok: true,
        required: true,
        detail: 'nft -c accepted the probe table',
      });
    } catch (e) {
      checks.push({
        name: 'nf_tables: jhash seed, mark maps, maps of counters, ct mark/label/event/state, fib, timeout sets updated and deleted from rules, jumps, meta time',
        ok: false,
        required: true,
        detail: `kernel refused the probe table: ${(e as Error).message}`,
      });
    }
  }
  if (v.status === 0 && (opts.handshakeTimeoutSeconds ?? BALANCER_DEFAULTS.handshakeTimeoutSeconds) > 0) {
    // Text: nft 1.0.6 loses a ct timeout policy given in JSON (the reconciler declares them in text too).
    // The object as the reconciler declares it, and a rule that names it after conntrack, as the SYN chains do.
    const t = { family: 'inet' as const, name: probeTable };
    const probe = `add table inet ${probeTable}\n${ctTimeoutText(t, [{ name: 'h', protocol: 'tcp', l3proto: 'ip', policy: { syn_sent: 10, syn_recv: 10 } }])}add chain inet ${probeTable} r { type filter hook prerouting priority -150; }\nadd rule inet ${probeTable} r tcp flags & (syn | ack) == syn ct timeout set "h"\n`;
    const name = 'conntrack timeout policies (ct timeout)';
    try {
      await nftCli().applyText(probe, true);
      checks.push({ name, ok: true, required: true, detail: 'nft -c accepted a handshake timeout policy' });
    } catch (e) {
      checks.push({
        name,
        ok: false,
        required: true,
        detail: `kernel refused a ct timeout policy (CONFIG_NF_CONNTRACK_TIMEOUT): ${(e as Error).message}; set handshakeTimeoutSeconds to 0 to run with the kernel's timeouts`,
      });
    }
  }
  return checks;
}

/** conntrack loaded, its table's use, and TIME_WAIT where a node has siblings. */
function conntrackChecks(opts: DoctorOptions): Check[] {
  const checks: Check[] = [];
  const ct = sysctl('net/netfilter/nf_conntrack_max');
  checks.push({
    name: 'conntrack',
    ok: ct !== null,
    required: true,
    detail: ct !== null ? `nf_conntrack loaded (max ${ct})` : 'nf_conntrack is not loaded (modprobe nf_conntrack)',
  });
  const use = conntrackUse();
  const ratio = opts.conntrackAlarmRatio ?? BALANCER_DEFAULTS.conntrackAlarmRatio;
  if (use) checks.push({ name: 'conntrack table use', ok: use.count < use.max * ratio, required: false, detail: conntrackAdvice(use, ratio) });
  if (opts.siblings) {
    const tw = Number(sysctl('net/netfilter/nf_conntrack_tcp_timeout_time_wait') ?? NaN);
    checks.push({
      name: 'conntrack TIME_WAIT',
      ok: tw <= TIME_WAIT_ADVICE_SECONDS,
      required: false,
      detail:
        tw <= TIME_WAIT_ADVICE_SECONDS
          ? `${tw} s`
          : `${Number.isNaN(tw) ? 'unknown' : `${tw} s`}: an ended connection that the routers moved here keeps its firewall that long, and a client that reuses the port within seconds and is moved here by the routers would follow it (sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=${TIME_WAIT_ADVICE_SECONDS})`,
    });
    checks.push(
      sysctlOnCheck(
        'conntrack timestamps',
        'net/netfilter/nf_conntrack_timestamp',
        false,
        'on',
        (v) =>
          `${v ?? 'unknown'}: when a sibling records a new connection on a tuple that this node holds an entry of on another firewall, the entry is deleted even if it is a still later connection's (a client that reused its port again), whose packets then cross a firewall that does not know them (sysctl -w net.netfilter.nf_conntrack_timestamp=1)`,
      ),
    );
  }
  return checks;
}

/** Policy routing over netlink, forwarding, and rp_filter on the interfaces the config names. */
async function routingChecks(opts: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    const rt = Rtnl.open();
    try {
      const rules = await rt.rules();
      checks.push({ name: 'policy routing (rtnetlink rules)', ok: true, required: true, detail: `${rules.length} rules readable (IPv4 and IPv6)` });
    } finally {
      rt.close();
    }
  } catch (e) {
    checks.push({
      name: 'policy routing (rtnetlink rules)',
      ok: false,
      required: true,
      detail: `cannot read ip rules through netlink: ${(e as Error).message}`,
    });
  }
  checks.push(ipForwardCheck());
  if (opts.ipv6)
    checks.push(
      sysctlOnCheck(
        'IPv6 forwarding',
        'net/ipv6/conf/all/forwarding',
        true,
        'enabled',
        (v) =>
          `net.ipv6.conf.all.forwarding is ${v ?? 'missing (no IPv6 in this kernel?)'}: the firewalls have nextHop6, and this node would not forward IPv6 (sysctl -w net.ipv6.conf.all.forwarding=1)`,
      ),
    );
  for (const i of opts.interfaces ?? []) {
    const rp = sysctl(`net/ipv4/conf/${i}/rp_filter`);
    const all = sysctl('net/ipv4/conf/all/rp_filter');
    if (rp === null) {
      checks.push({ name: `interface ${i}`, ok: false, required: true, detail: 'interface does not exist' });
      continue;
    }
    const eff = Math.max(Number(rp), Number(all ?? 0));
    checks.push({
      name: `rp_filter ${i}`,
      ok: eff !== 1,
      required: false,
      detail: eff === 1 ? 'strict rp_filter drops replies that return through another firewall; use 2 (loose) or 0' : `effective ${eff}`,
    });
  }
  return checks;
}

/** What the firewall probes need: the helper, and the sysctls that send this node's answers back the probed way. */
async function probeChecks(opts: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = [];
  if (opts.health) {
    const py = await probeHelperRunnable();
    // Not required: a node whose helper cannot run starts degraded (an alarm; health holds its last state, the
    // supervisor retries and picks the helper up once it can run) rather than refusing, which would leave the kernel
    // as blind and the operator without the API, metrics and alarms.
    checks.push({
      name: 'probe helper (python3)',
      ok: py.ok,
      required: false,
      detail: py.ok ? py.detail : `${py.detail}: the node starts degraded, health checks cannot run`,
    });
    for (const k of ['fwmark_reflect', 'tcp_fwmark_accept']) {
      const v = sysctl(`net/ipv4/${k}`);
      checks.push({
        name: k,
        ok: v === '1',
        required: true,
        detail:
          v === '1'
            ? 'enabled'
            : `net.ipv4.${k} is ${v ?? 'missing'}: this node's answers to the twin's firewall probes would not return through the probed firewall (sysctl -w net.ipv4.${k}=1)`,
      });
    }
    if (opts.ipv6) {
      // The twin may probe this node over IPv6 (its health targets), and ICMPv6 echo replies have their own switch.
      const v = sysctl('net/ipv6/fwmark_reflect');
      checks.push({
        name: 'IPv6 fwmark_reflect',
        ok: v === '1',
        required: true,
        detail:
          v === '1'
            ? 'enabled'
            : `net.ipv6.fwmark_reflect is ${v ?? 'missing'}: this node's ICMPv6 answers to the twin's firewall probes would not return through the probed firewall (sysctl -w net.ipv6.fwmark_reflect=1)`,
      });
    }
  }
  return checks;
}

/**
 * The routing daemon: installed, answering on its control socket, each configured session established. Not
 * required: a node without its daemon forwards what reaches it, it only attracts nothing.
 */
async function bgpChecks(bgp: ResolvedBgp): Promise<Check[]> {
  const v = spawnSync('bird', ['--version'], { encoding: 'utf8' });
  const installed = v.status === 0;
  const out: Check[] = [
    {
      name: 'BIRD (routing daemon)',
      ok: installed,
      required: false,
      detail: installed ? `${(v.stdout + v.stderr).trim()}` : 'bird not found: install the bird2 package (the bgp section needs it)',
    },
  ];
  if (!installed) return out;
  const protocols = await birdPort(bgp.controlSocket).protocols();
  out.push({
    name: 'BIRD running',
    ok: protocols !== null,
    required: false,
    detail: protocols
      ? `answers on ${bgp.controlSocket}`
      : `BIRD is not running or does not answer on ${bgp.controlSocket}: nothing is announced (systemctl start bird)`,
  });
  for (const p of protocols ? bgp.peers : []) {
    const s = protocols!.find((x) => x.name === birdProtocol(p.name));
    const up = s?.established ?? false;
    out.push({
      name: `BGP session ${p.name} (${p.address})`,
      ok: up,
      required: false,
      detail: s ? `${s.state} ${s.info}`.trim() : `BIRD has no protocol ${birdProtocol(p.name)}: its configuration is not fwlb's (fwlb run loads it)`,
    });
  }
  return out;
}
