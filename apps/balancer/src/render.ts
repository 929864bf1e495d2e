// Renders a node's desired nft table and policy routes from config and live firewalls; pure layer of apps/balancer.
import { buildGroupedTable, BucketTable, FlowKey, keyImage } from '@fwlb/flowhash';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import type { DesiredChain, DesiredTable, ElementOp, NftJson, RawElement } from '@fwlb/nft';
import type { PolicyRoute } from '@fwlb/routing';
import { slots } from './membership';
export { BUCKETS_NEXT, SIDE_LABEL } from './rules';
import { preroutingRules } from './prerouting';
import {
  BUCKETS_NEXT,
  counterBy,
  ctMark,
  eq,
  familiesOf,
  familyFor,
  Family,
  FIREWALL_SYN_CHAIN,
  firewallSynChain,
  flowKeyType,
  fromFirewall,
  handshakeTimeouts,
  hashFields,
  IPV4,
  IPV6,
  meta,
  ne,
  newFlowsCounter,
  NEW_COUNTERS,
  RuleContext,
  SENT_COUNTERS,
  sentCounter,
  set,
  FRESH_CHAIN,
  freshChain,
  SIDE_SYN_CHAIN,
  sideSynChain,
} from './rules';

export const TABLE_FAMILY = 'inet' as const;
export const TABLE_NAME = 'fwlb';

/** A session the kernel must steer to a firewall other than the one its bucket gives (layer 3 exceptions). */
export interface Pin extends FlowKey {
  mark: number;
}

export const PIN_MAP_TYPE = flowKeyType(IPV4);

export function pinElement(p: Pin): [NftJson, number] {
  return [{ concat: [p.outerAddr, p.outerPort, p.innerAddr, p.innerPort, p.proto === 6 ? 'tcp' : p.proto === 17 ? 'udp' : p.proto] }, p.mark];
}

/** The `conn` set of a firewall slot and family (see flowSets): this node's record of the connections it saw start there. */
export const connSetName = (index: number, fam: Family) => `conn${index}${fam.suffix}`;

/**
 * The element changes that make this node's `conn` sets say what the session table says of these TCP sessions:
 * each tuple in its firewall's set and in no other (oriented as the side's packets carry it, see sideTuple). Why: a
 * sibling saw a new connection start on an earlier one's tuple and recorded another firewall; this node may hold
 * the earlier connection's start (it saw that SYN, and its close crossed the sibling), and a router moving the new
 * connection here would send it after that record. A tuple leaves a set by an add and a delete in one transaction:
 * the kernel refuses to delete an element that is not there.
 */
export function connRecordOps(c: ResolvedBalancerConfig, sessions: readonly (FlowKey & { firewall: string })[]): ElementOp[] {
  const families = familiesOf(c);
  const sl = slots(c);
  const add = new Map<string, RawElement[]>();
  const leave = new Map<string, RawElement[]>();
  const push = (m: Map<string, RawElement[]>, set: string, e: RawElement) => {
    const list = m.get(set);
    if (list) list.push(e);
    else m.set(set, [e]);
  };
  for (const s of sessions) {
    const fam = familyFor(families, s.outerAddr);
    if (s.proto !== 6 || !fam || !sl.some((x) => x.id === s.firewall)) continue;
    const sideFirst = c.role === 'outside' ? s : { ...s, outerAddr: s.innerAddr, outerPort: s.innerPort, innerAddr: s.outerAddr, innerPort: s.outerPort };
    const e = { key: keyImage(sideFirst) };
    for (const x of sl) push(x.id === s.firewall ? add : leave, connSetName(x.index, fam), e);
  }
  const ops = (verb: 'add' | 'delete', m: Map<string, RawElement[]>) => [...m].map(([name, elements]) => ({ name, verb, elements }));
  return [...ops('add', leave), ...ops('delete', leave), ...ops('add', add)];
}

export interface RenderInput {
  config: ResolvedBalancerConfig;
  /** Firewalls that may take new sessions (see MembershipSnapshot). */
  live: readonly string[];
  /** Firewalls whose established flows keep them (link up, not gone), even if administratively disabled. */
  restorable: readonly string[];
  /** Firewalls that look gone while the link to them is up: flows keep them only while heard from them. */
  suspect?: readonly string[];
  /** Pinned sessions (only with a session table), already limited to restorable firewalls. */
  pins?: readonly Pin[];
}

/** How long a packet from a suspect firewall keeps its flow on it (the `heard` set's timeout). */
export const HEARD_SECONDS = 30;
/**
 * How long a TCP SYN that arrived from a firewall vouches for the ct mark its SYN-ACK finds (the `synseen` set's
 * timeout): the answer comes within a round trip, a retransmitted SYN refreshes it.
 */
export const SYN_SEEN_SECONDS = 10;
/**
 * How long a new connection's start (a SYN or SYN-ACK this node steered, or one from a firewall that conntrack
 * refused) keeps the connection's packets off the ct mark of an entry an earlier connection with the same tuple left
 * (the `fresh` set's timeout). The connection's first packet that meets an entry takes the element.
 */
export const FRESH_SECONDS = 10;
/**
 * Only the events the session sync needs: an answered session, its end, and a change of its firewall (the ct mark
 * changes when a flow follows the firewall its packets come from, or a reused tuple is hashed anew); no
 * per-state-change updates. A mark event comes only when the mark changes, never for a flow that keeps its firewall.
 */
export const CT_EVENTS = ['new', 'reply', 'assured', 'destroy', 'mark'];

/** The config's sync groups: firewall ids by group name; empty without groups. */
export function syncGroups(c: ResolvedBalancerConfig): string[][] {
  const by = new Map<string, string[]>();
  for (const f of c.firewalls) if (f.syncGroup) by.set(f.syncGroup, [...(by.get(f.syncGroup) ?? []), f.id]);
  return [...by.values()];
}

/** The bucket table: live firewalls keep their buckets; one that is not gives them to its sync group first. */
export function bucketTable(input: RenderInput): BucketTable {
  return buildGroupedTable(
    input.config.firewalls.map((f) => f.id),
    input.config.hash.buckets,
    input.live,
    syncGroups(input.config),
  );
}

/**
 * The desired table plus the rules /status reads counters from, by name ("learn:<fw>", "relearn:<fw>", "conn:<fw>", "nat-pool:<fw>", "restore",
 * "restore-heard", "hash-syn", "hash-tcp-udp", "hash-other", "pinned", "no-firewall-drop").
 */
export interface RenderedTable extends DesiredTable {
  labeled: Record<string, NftJson[]>;
}

/**
 * How long this node remembers, without a packet, which firewall a connection it saw start went to (the `conn`
 * sets' timeout): as long as conntrack keeps a connection that saw no answer (its UNACK timeout is 300 s) would cost
 * a set element per connection for minutes, so an idle one-sided connection falls back to its pin after this.
 */
export const CONN_SECONDS = 120;
/**
 * Elements of each `conn` set. Why not more: every SYN adds one (a SYN flood fills the sets within seconds, and
 * kernel memory is the node's budget too); a connection that finds them full is not recorded and falls back to its
 * pin and the hash, as without them.
 */
export const CONN_SET_SIZE = 65536;

/**
 * A bucket table that takes over at `at` (ms since the epoch, a whole second): until then the kernel hashes with
 * the current map, from then on with `table`, switched by the kernel's clock, so every node switches at the same
 * moment whenever it received the change.
 */
export interface RenderSwitch {
  at: number;
  table: BucketTable;
}

/** What every rule builder reads: the config, the side, each firewall's mark and conn set, how to steer. */
function ruleContext(c: ResolvedBalancerConfig, next: RenderSwitch | undefined, handshake: NftJson[][]): RuleContext {
  const sl = slots(c);
  const connIndex = new Map(sl.map((s) => [s.id, s.index]));
  // Every firewall's mark is in the map (see tableMaps): the bucket maps hold no other, so counting never ends a
  // steering rule.
  const newFlows = counterBy(meta('mark'), NEW_COUNTERS);
  return {
    c,
    side: eq(meta('iifname'), c.sideInterface),
    notSide: ne(meta('iifname'), c.sideInterface),
    markOf: new Map(sl.map((s) => [s.id, s.mark])),
    families: familiesOf(c),
    connSet: (f, fam) => connSetName(connIndex.get(f.id)!, fam),
    steer: (fam, ported, map = 'buckets') => [
      set(meta('mark'), { jhash: { mod: c.hash.buckets, seed: c.hash.seed, expr: { concat: hashFields(c, ported, fam) } } }),
      // Why two statements: a named map keyed by mark cannot take jhash directly in nft 1.0.6's JSON; the
      // bucket number goes through the mark first. A miss ends the rule, so every bucket is always filled.
      set(meta('mark'), { map: { key: meta('mark'), data: `@${map}` } }),
      set(ctMark, meta('mark')),
      newFlows,
    ],
    switchAt: next ? Math.round(next.at / 1000) : null,
    // The side label and the event filter serve the session sync only: without a session table a new flow pays for
    // neither (both add work to every new conntrack entry).
    events: c.sessionTable ? [set({ ct: { key: 'event' } }, CT_EVENTS)] : [],
    handshake,
  };
}

/** The per-flow sets of each family: heard, synseen, fresh and, with a session table, one `conn` set per firewall. */
function flowSets(c: ResolvedBalancerConfig, families: Family[]) {
  return families.flatMap((fam) => {
    const flowSet = (name: string, timeout: number, size = 262144) => ({ name: `${name}${fam.suffix}`, type: flowKeyType(fam), timeout, size });
    return [
      flowSet('heard', HEARD_SECONDS),
      flowSet('synseen', SYN_SEEN_SECONDS),
      flowSet('fresh', FRESH_SECONDS),
      ...(c.sessionTable ? slots(c).map((s) => flowSet(`conn${s.index}`, CONN_SECONDS, CONN_SET_SIZE)) : []),
    ];
  });
}

/**
 * The bucket maps (the current one, and the next while a switch is pending), the counter maps and, with a session
 * table, the pins.
 */
function tableMaps(
  c: ResolvedBalancerConfig,
  markOf: Map<string, number>,
  table: BucketTable,
  next: RenderSwitch | undefined,
  pins: readonly Pin[],
  restorable: readonly string[],
) {
  const counterMap = (name: string, ids: readonly string[], counter: (id: string) => string) => ({
    name,
    type: 'mark',
    map: 'counter',
    elements: c.firewalls.filter((f) => ids.includes(f.id)).map((f): [number, string] => [markOf.get(f.id)!, counter(f.id)]),
  });
  const elementsOf = (t: BucketTable) => {
    const out: [number, number][] = [];
    t.owner.forEach((o, b) => {
      if (o !== null) out.push([b, markOf.get(o)!]);
    });
    return out;
  };
  return [
    { name: 'buckets', type: 'mark', map: 'mark', elements: elementsOf(table) },
    ...(next ? [{ name: BUCKETS_NEXT, type: 'mark', map: 'mark', elements: elementsOf(next.table) }] : []),
    counterMap(SENT_COUNTERS, restorable, sentCounter),
    counterMap(
      NEW_COUNTERS,
      c.firewalls.map((f) => f.id),
      newFlowsCounter,
    ),
    ...(c.sessionTable
      ? familiesOf(c).map((fam, _, families) => ({
          name: `pins${fam.suffix}`,
          type: flowKeyType(fam),
          map: 'mark',
          elements: pins.filter((p) => familyFor(families, p.outerAddr) === fam).map(pinElement),
          owned: true,
        }))
      : []),
  ];
}

/** The chains for this node's own traffic: the mark of what arrives for it from a firewall, and of its replies. */
function localChains(c: ResolvedBalancerConfig, markOf: Map<string, number>): DesiredChain[] {
  return [
    // Why: the kernel routes its own replies (ICMP echo replies to the twin's probes, TCP handshakes) before any
    // output hook, with the incoming packet's mark when net.ipv4.fwmark_reflect / tcp_fwmark_accept are 1.
    // Marking what arrives from firewall k for this node makes those replies leave through firewall k. Why the
    // input hook: only packets for this node pass it (a VIP of the SLB in-process is DNATed and forwarded, so it
    // never does), and the reply is built after it; forwarded packets pay nothing, and no fib lookup is needed.
    {
      name: 'input',
      type: 'filter',
      hook: 'input',
      prio: -150,
      policy: 'accept',
      rules: c.firewalls.map((f) => [...fromFirewall(f), set(meta('mark'), markOf.get(f.id))]),
    },
    // Why: this node's own replies (to the twin's firewall probes, to API clients across the firewalls) must
    // leave by the firewall their flow arrived from; the learned ct mark re-routes them.
    {
      name: 'output',
      type: 'route',
      hook: 'output',
      prio: -150,
      policy: 'accept',
      // All configured marks, not only reachable ones: a node that saw every firewall down must still answer
      // the twin's probes, or both would wait for each other forever.
      rules: [[eq(meta('mark'), 0), eq(ctMark, { set: slots(c).map((x) => x.mark) }), set(meta('mark'), ctMark)]],
    },
  ];
}

export function renderTable(input: RenderInput, table: BucketTable, next?: RenderSwitch): RenderedTable {
  const c = input.config;
  const handshake = handshakeTimeouts(c, familiesOf(c));
  const x = ruleContext(c, next, handshake.rules);
  const labeled: Record<string, NftJson[]> = {};
  const suspect = new Set(input.suspect ?? []);
  const marksOf = (ids: Iterable<string>) =>
    [...ids]
      .map((id) => x.markOf.get(id))
      .filter((m): m is number => m !== undefined)
      .sort((a, b) => a - b);
  const anyLive = table.owner.some((o) => o !== null);
  const rules = preroutingRules(
    x,
    { restoreMarks: marksOf(input.restorable), suspect: c.firewalls.filter((f) => suspect.has(f.id)), suspectMarks: marksOf(suspect), anyLive },
    labeled,
  );
  return {
    labeled,
    family: TABLE_FAMILY,
    name: TABLE_NAME,
    ctTimeouts: handshake.objects,
    sets: flowSets(c, x.families),
    maps: tableMaps(c, x.markOf, table, next, input.pins ?? [], input.restorable),
    // Every configured firewall's, live or not: a counter keeps its count while its firewall is away.
    counters: c.firewalls.flatMap((f) => [sentCounter(f.id), newFlowsCounter(f.id)]),
    chains: [
      // Jump targets first: one transaction adds the chains in order.
      ...(anyLive
        ? [
            { name: SIDE_SYN_CHAIN, rules: sideSynChain(x, labeled) },
            { name: FRESH_CHAIN, rules: freshChain(x) },
          ]
        : []),
      { name: FIREWALL_SYN_CHAIN, rules: firewallSynChain(x) },
      { name: 'prerouting', type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept', rules },
      ...localChains(c, x.markOf),
    ],
  };
}

/**
 * One ip rule and one table per configured firewall and family, live or not: pinned flows still need their path.
 * IPv6 has its own rules and tables (the same numbers: the kernel keeps them apart by family).
 */
export function renderRoutes(c: ResolvedBalancerConfig): PolicyRoute[] {
  return familiesOf(c).flatMap((fam) =>
    slots(c).map((s): PolicyRoute => {
      const f = c.firewalls[s.index];
      return {
        ...(fam === IPV6 ? { family: 6 } : {}),
        fwmark: s.mark,
        table: s.table,
        priority: s.priority,
        gateway: fam === IPV6 ? f.nextHop6! : f.nextHop,
        oif: f.interface,
      };
    }),
  );
}
