// Renders a node's desired nft table and policy routes from config and live firewalls; pure layer of apps/balancer.
import { buildGroupedTable, BucketTable, FlowKey } from '@fwlb/flowhash';
import type { ResolvedBalancerConfig } from '@fwlb/config';
import type { DesiredTable, NftJson } from '@fwlb/nft';
import type { PolicyRoute } from '@fwlb/routing';
import { slots } from './membership';

export const TABLE_FAMILY = 'inet' as const;
export const TABLE_NAME = 'fwlb';

const meta = (key: string) => ({ meta: { key } });
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
const eq = (left: NftJson, right: NftJson) => ({ match: { op: '==', left, right } });
const ne = (left: NftJson, right: NftJson) => ({ match: { op: '!=', left, right } });
const set = (key: NftJson, value: NftJson) => ({ mangle: { key, value } });
const ctMark = { ct: { key: 'mark' } };
const counter = { counter: null };

/**
 * ct label bit set on flows whose first packet came from the side interface (hashed or pinned here). Why: the
 * session table needs each flow's outer end; with it, outer = orig source (outside node) or orig destination
 * (inside node) for these flows, and the other way round for flows learned from a firewall.
 */
export const SIDE_LABEL = 1;

/** A session the kernel must steer to a firewall other than the one its bucket gives (layer 3 exceptions). */
export interface Pin extends FlowKey {
  mark: number;
}

export const PIN_MAP_TYPE = ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service', 'inet_proto'];

export function pinElement(p: Pin): [NftJson, number] {
  return [{ concat: [p.outerAddr, p.outerPort, p.innerAddr, p.innerPort, p.proto === 6 ? 'tcp' : p.proto === 17 ? 'udp' : p.proto] }, p.mark];
}

/**
 * The jhash concatenation. Why the order differs by role: the outside node sees the client as source, the
 * inside node as destination, and both must hash (outer, inner) to land a flow in the same bucket.
 * order=packet hashes (source, destination) on both, which is asymmetric: only for demonstrating failure.
 */
function hashFields(c: ResolvedBalancerConfig, ported: boolean): NftJson[] {
  const src = ported ? [payload('ip', 'saddr'), payload('th', 'sport')] : [payload('ip', 'saddr')];
  const dst = ported ? [payload('ip', 'daddr'), payload('th', 'dport')] : [payload('ip', 'daddr')];
  const outerIsSource = c.role === 'outside' || c.hash.order === 'packet';
  return [...(outerIsSource ? [...src, ...dst] : [...dst, ...src]), meta('l4proto')];
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
/** The 5-tuple as a packet from the side interface carries it; packets from a firewall store it reversed. */
const SIDE_TUPLE = [payload('ip', 'saddr'), payload('th', 'sport'), payload('ip', 'daddr'), payload('th', 'dport'), meta('l4proto')];
const FIREWALL_TUPLE = [payload('ip', 'daddr'), payload('th', 'dport'), payload('ip', 'saddr'), payload('th', 'sport'), meta('l4proto')];
/**
 * A connection's original tuple as conntrack keeps it: the same for its SYN and its SYN-ACK whatever NAT does on
 * this node (the embedded SLB's SYN-ACK carries the real server's address, not the VIP its SYN was sent to).
 */
const CT_ORIGINAL_TUPLE = [{ ct: { key: 'ip saddr', dir: 'original' } }, { ct: { key: 'proto-src', dir: 'original' } }, { ct: { key: 'ip daddr', dir: 'original' } }, { ct: { key: 'proto-dst', dir: 'original' } }, { ct: { key: 'protocol' } }];
/** Only the events the session sync needs (an answered session, its end): no per-state-change updates. */
export const CT_EVENTS = ['new', 'reply', 'assured', 'destroy'];

/** The config's sync groups (issue 11): firewall ids by group name; empty without groups. */
export function syncGroups(c: ResolvedBalancerConfig): string[][] {
  const by = new Map<string, string[]>();
  for (const f of c.firewalls) if (f.syncGroup) by.set(f.syncGroup, [...(by.get(f.syncGroup) ?? []), f.id]);
  return [...by.values()];
}

/** The bucket table: live firewalls keep their buckets; one that is not gives them to its sync group first. */
export function bucketTable(input: RenderInput): BucketTable {
  return buildGroupedTable(input.config.firewalls.map((f) => f.id), input.config.hash.buckets, input.live, syncGroups(input.config));
}

/** The desired table plus the rules /status reads counters from, by name ("learn:<fw>", "restore", "restore-heard", "hash-tcp-udp", "hash-other"). */
export interface RenderedTable extends DesiredTable {
  labeled: Record<string, NftJson[]>;
}

export function renderTable(input: RenderInput, table: BucketTable): RenderedTable {
  const c = input.config;
  const sl = slots(c);
  const markOf = new Map(sl.map((s) => [s.id, s.mark]));
  const side = eq(meta('iifname'), c.sideInterface);
  const rules: NftJson[][] = [];
  const labeled: Record<string, NftJson[]> = {};
  const add = (label: string | null, r: NftJson[]) => {
    rules.push(r);
    if (label) labeled[label] = r;
  };
  const tcpUdp = eq(meta('l4proto'), { set: ['tcp', 'udp'] });
  const fromFirewall = (f: ResolvedBalancerConfig['firewalls'][number]): NftJson[] => {
    const m: NftJson[] = [eq(meta('iifname'), f.interface)];
    if (f.mac) m.push(eq(payload('ether', 'saddr'), f.mac.toLowerCase()));
    return m;
  };
  // The side label and the event filter serve the session sync only: without a session table a new flow pays for
  // neither (issue 16: both add work to every new conntrack entry).
  const events: NftJson[] = c.sessionTable ? [set({ ct: { key: 'event' } }, CT_EVENTS)] : [];
  const suspect = new Set(input.suspect ?? []);
  // A packet from a suspect firewall proves that it still forwards this flow: remember the flow for a while.
  // Rendered only for suspect firewalls, so the common path pays nothing for it.
  for (const f of c.firewalls) {
    if (suspect.has(f.id)) add(null, [...fromFirewall(f), eq(meta('nfproto'), 'ipv4'), tcpUdp, { set: { op: 'update', elem: { concat: FIREWALL_TUPLE }, set: '@heard' } }]);
  }
  // A reused 5-tuple (a client port used again within minutes) can meet a stale conntrack entry of the earlier
  // connection on a node that saw only part of it (a SYN, or one direction, through ECMP): conntrack ignores a SYN or
  // SYN-ACK on an established entry and keeps that entry attached, so its old firewall's mark would be restored.
  // A SYN is the start of a connection, so it never inherits a decision: from the side it is steered afresh (its mark
  // cleared here, set again below); from a firewall it clears the mark, so learning takes that firewall, and is
  // remembered in `@synseen` by its conntrack original tuple. A SYN-ACK from the side keeps its ct mark only if this
  // node saw that SYN (the same entry, so the same original tuple, NAT or not); otherwise
  // its mark is stale or another node's, and it is steered afresh (the hash puts it where the SYN went).
  // Both rules stop at their third comparison (interface, tcp, flags) for every packet that is not a SYN.
  const tcp = eq(meta('l4proto'), 'tcp');
  const synFlag = { match: { op: 'in', left: payload('tcp', 'flags'), right: 'syn' } };
  const bareSyn = eq({ '&': [payload('tcp', 'flags'), ['syn', 'ack']] }, 'syn');
  add(null, [side, tcp, synFlag, ne(ctMark, 0), eq(meta('nfproto'), 'ipv4'), ne({ concat: CT_ORIGINAL_TUPLE }, '@synseen'), set(ctMark, 0)]);
  const marksOf = (ids: Iterable<string>) => [...ids].map((id) => markOf.get(id)).filter((m): m is number => m !== undefined).sort((a, b) => a - b);
  const restoreMarks = marksOf(input.restorable);
  // The fast path comes first (issue 16): an established packet from the side is restored by the first rule, before
  // the fib lookup below. Why that is safe: a flow from the side to this node itself never carries a firewall's ct
  // mark (marks are set only by hashing, pins and learning from a firewall, all for forwarded flows).
  // Why `ct mark {restorable}`: a flow on a firewall whose link is down is re-hashed instead of black-holed.
  if (restoreMarks.length) add('restore', [side, eq(ctMark, { set: restoreMarks }), counter, set(meta('mark'), ctMark), { accept: null }]);
  const suspectMarks = marksOf(suspect);
  if (suspectMarks.length) {
    add('restore-heard', [side, eq(ctMark, { set: suspectMarks }), eq(meta('nfproto'), 'ipv4'), tcpUdp, eq({ concat: SIDE_TUPLE }, '@heard'), counter, set(meta('mark'), ctMark), { accept: null }]);
  }
  // An established packet from a firewall leaves at the exit after the SYN rule (issue 16): nothing below applies to
  // it (learning needs ct mark 0, everything else is for the side). Before, it failed five comparisons first.
  add(null, [ne(meta('iifname'), c.sideInterface), tcp, bareSyn, eq(meta('nfproto'), 'ipv4'), set(ctMark, 0), { set: { op: 'update', elem: { concat: CT_ORIGINAL_TUPLE }, set: '@synseen' } }]);
  add(null, [ne(meta('iifname'), c.sideInterface), ne(ctMark, 0), { accept: null }]);
  // Traffic to this node itself (API, probes) is never steered; only a packet that was not restored pays the lookup.
  add(null, [side, eq({ fib: { result: 'type', flags: ['daddr'] } }, 'local'), { accept: null }]);
  if (c.ingressLearning) {
    for (const f of c.firewalls) add(`learn:${f.id}`, [...fromFirewall(f), eq(ctMark, 0), counter, set(ctMark, markOf.get(f.id)), ...events]);
  }
  // Everything below is for packets from the side: any other packet leaves with one comparison.
  add(null, [ne(meta('iifname'), c.sideInterface), { accept: null }]);
  // The side label marks a flow whose first packet came from the side interface, once, when its entry is created.
  // Why only then: an established flow re-hashed here (its firewall went away) was learned from a firewall, and
  // labelling it would reverse its orientation in the session table (issue 14).
  if (c.sessionTable) add(null, [side, { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } }, set({ ct: { key: 'label' } }, SIDE_LABEL), ...events]);
  if (c.sessionTable) {
    // Layer 3/4: a flow this node has no state for (a restart, conntrack lost, a non-SYN first packet) is looked
    // up in the pins before it is hashed. A miss ends the rule and leaves the mark 0, so hashing follows.
    add('pinned', [
      side,
      eq(meta('nfproto'), 'ipv4'),
      eq(meta('l4proto'), { set: ['tcp', 'udp'] }),
      set(meta('mark'), { map: { key: { concat: hashFields(c, true) }, data: '@pins' } }),
      counter,
      set(ctMark, meta('mark')),
      { accept: null },
    ]);
  }
  const anyLive = table.owner.some((o) => o !== null);
  if (!anyLive) {
    add('no-firewall-drop', [side, eq(meta('nfproto'), 'ipv4'), counter, { drop: null }]);
  } else {
    const steer = (ported: boolean): NftJson[] => [
      set(meta('mark'), { jhash: { mod: c.hash.buckets, seed: c.hash.seed, expr: { concat: hashFields(c, ported) } } }),
      // Why two statements: a named map keyed by mark cannot take jhash directly in nft 1.0.6's JSON; the
      // bucket number goes through the mark first. A miss ends the rule, so every bucket is always filled.
      set(meta('mark'), { map: { key: meta('mark'), data: '@buckets' } }),
      set(ctMark, meta('mark')),
    ];
    add('hash-tcp-udp', [side, eq(meta('nfproto'), 'ipv4'), eq(meta('l4proto'), { set: ['tcp', 'udp'] }), counter, ...steer(true)]);
    add('hash-other', [side, eq(meta('nfproto'), 'ipv4'), ne(meta('l4proto'), { set: ['tcp', 'udp'] }), counter, ...steer(false)]);
  }
  const elements: [number, number][] = [];
  table.owner.forEach((o, b) => {
    if (o !== null) elements.push([b, markOf.get(o)!]);
  });
  return {
    labeled,
    family: TABLE_FAMILY,
    name: TABLE_NAME,
    sets: [
      { name: 'heard', type: PIN_MAP_TYPE, timeout: HEARD_SECONDS, size: 262144 },
      { name: 'synseen', type: PIN_MAP_TYPE, timeout: SYN_SEEN_SECONDS, size: 262144 },
    ],
    maps: [
      { name: 'buckets', type: 'mark', map: 'mark', elements },
      ...(c.sessionTable ? [{ name: 'pins', type: PIN_MAP_TYPE, map: 'mark', elements: (input.pins ?? []).map(pinElement) }] : []),
    ],
    chains: [
      { name: 'prerouting', type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept', rules },
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
        rules: [[eq(meta('mark'), 0), eq(ctMark, { set: sl.map((x) => x.mark) }), set(meta('mark'), ctMark)]],
      },
    ],
  };
}

/** One ip rule and one table per configured firewall, live or not: pinned flows still need their path. */
export function renderRoutes(c: ResolvedBalancerConfig): PolicyRoute[] {
  return slots(c).map((s) => ({ fwmark: s.mark, table: s.table, priority: s.priority, gateway: c.firewalls[s.index].nextHop, oif: c.firewalls[s.index].interface }));
}
