// The steering rules' vocabulary (matches, tuples, families, the hash), the two SYN chains and the handshake timeouts;
// the prerouting chain's ordered builders are prerouting.ts. Pure layer of apps/balancer.
import type { ResolvedBalancerConfig } from '@fwlb/config';
import type { DesiredCtTimeout, NftJson } from '@fwlb/nft';
import { familyOf } from '@fwlb/flowhash';

type Firewall = ResolvedBalancerConfig['firewalls'][number];
type Rule = NftJson[];

export const meta = (key: string) => ({ meta: { key } });
export const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
export const eq = (left: NftJson, right: NftJson) => ({ match: { op: '==', left, right } });
export const ne = (left: NftJson, right: NftJson) => ({ match: { op: '!=', left, right } });
export const set = (key: NftJson, value: NftJson) => ({ mangle: { key, value } });
export const stateIn = (states: string | string[]) => ({ match: { op: 'in', left: { ct: { key: 'state' } }, right: states } });
export const setOp = (op: 'update' | 'delete', tuple: NftJson[], name: string) => ({ set: { op, elem: { concat: tuple }, set: `@${name}` } });
export const ctMark = { ct: { key: 'mark' } };
export const counter = { counter: null };
/**
 * A named counter chosen by `key` among `names` (value → counter name): one lookup that counts the packet on its
 * firewall's counter; a key not among them ends the rule, as a set match would.
 */
/**
 * Count on the named counter a named map gives for `key`; a key the map lacks ends the rule. The map is named, never
 * in the rule: a rule's own map has its elements made inactive when a change rewrites its chain, and a packet still
 * running the old rule just after that commit would miss it (measured: about 3 packets in 100 rewrites under a ping
 * flood), skipping what follows in the rule.
 */
export const counterBy = (key: NftJson, map: string) => ({ counter: { map: { key, data: `@${map}` } } });
/** The counter maps: each restorable firewall's mark to its `sent` counter, each firewall's mark to its `new` one. */
export const SENT_COUNTERS = 'sent_counters';
export const NEW_COUNTERS = 'new_counters';
/** A firewall's named counters: what this node sent it on established flows, and the new flows it hashed to it. */
export const sentCounter = (id: string) => `sent-${id}`;
export const newFlowsCounter = (id: string) => `new-${id}`;
export const accept = { accept: null };
export const tcp = eq(meta('l4proto'), 'tcp');
export const tcpUdp = eq(meta('l4proto'), { set: ['tcp', 'udp'] });
export const synFlag = { match: { op: 'in', left: payload('tcp', 'flags'), right: 'syn' } };
/** A SYN, FIN or RST: the packets that start or end a connection. */
export const synFinRst = ne({ '&': [payload('tcp', 'flags'), ['syn', 'fin', 'rst']] }, 0);
/** A FIN or RST: the end of a connection, seen from one side. */
const finOrRst = ne({ '&': [payload('tcp', 'flags'), ['fin', 'rst']] }, 0);
const ackFlag = { match: { op: 'in', left: payload('tcp', 'flags'), right: 'ack' } };
const bareSyn = eq({ '&': [payload('tcp', 'flags'), ['syn', 'ack']] }, 'syn');
export const localDest = eq({ fib: { result: 'type', flags: ['daddr'] } }, 'local');

/**
 * ct label bit set on flows whose first packet came from the side interface (hashed or pinned here). Why: the
 * session table needs each flow's outer end; with it, outer = orig source (outside node) or orig destination
 * (inside node) for these flows, and the other way round for flows learned from a firewall.
 */
export const SIDE_LABEL = 1;

/**
 * An address family the rules steer. Why one `inet` table for both, with a copy of each family-specific rule and
 * set: the family-neutral rules (restore, learning, the ct mark of replies and ICMP errors) are then written once
 * and cost an IPv6 packet nothing extra, and one transaction changes both families together.
 */
export interface Family {
  nfproto: 'ipv4' | 'ipv6';
  /** nft's payload protocol of the addresses. */
  l3: 'ip' | 'ip6';
  addrType: 'ipv4_addr' | 'ipv6_addr';
  /** Appended to the name of each set and map keyed by addresses. */
  suffix: '' | '_v6';
  /** Appended to the label of each counted rule (/status adds the families up). */
  label: '' | '/ipv6';
}
export const IPV4: Family = { nfproto: 'ipv4', l3: 'ip', addrType: 'ipv4_addr', suffix: '', label: '' };
export const IPV6: Family = { nfproto: 'ipv6', l3: 'ip6', addrType: 'ipv6_addr', suffix: '_v6', label: '/ipv6' };

/** IPv6 is steered when the firewalls have IPv6 next hops (config validation: all of them or none). */
export const steersIPv6 = (c: Pick<ResolvedBalancerConfig, 'firewalls'>) => c.firewalls.every((f) => f.nextHop6);

/** The families a config steers: IPv4 always, IPv6 as steersIPv6 says. */
export function familiesOf(c: ResolvedBalancerConfig): Family[] {
  return steersIPv6(c) ? [IPV4, IPV6] : [IPV4];
}

/** The family among `families` that an address belongs to; none when that family is not steered. */
export const familyFor = (families: readonly Family[], addr: string): Family | undefined => families.find((f) => (f === IPV6) === (familyOf(addr) === 6));

export const isFamily = (f: Family) => eq(meta('nfproto'), f.nfproto);
/** A set's or map's type keyed by a flow's 5-tuple. */
export const flowKeyType = (f: Family) => [f.addrType, 'inet_service', f.addrType, 'inet_service', 'inet_proto'];

/** The 5-tuple as a packet from the side interface carries it; packets from a firewall store it reversed. */
export const sideTuple = (f: Family) => [payload(f.l3, 'saddr'), payload('th', 'sport'), payload(f.l3, 'daddr'), payload('th', 'dport'), meta('l4proto')];
export const firewallTuple = (f: Family) => [payload(f.l3, 'daddr'), payload('th', 'dport'), payload(f.l3, 'saddr'), payload('th', 'sport'), meta('l4proto')];
/**
 * A connection's original tuple as conntrack keeps it: the same for its SYN and its SYN-ACK whatever NAT does on
 * this node (the embedded SLB's SYN-ACK carries the real server's address, not the VIP its SYN was sent to).
 */
export const ctOriginalTuple = (f: Family) => [
  { ct: { key: `${f.l3} saddr`, dir: 'original' } },
  { ct: { key: 'proto-src', dir: 'original' } },
  { ct: { key: `${f.l3} daddr`, dir: 'original' } },
  { ct: { key: 'proto-dst', dir: 'original' } },
  { ct: { key: 'protocol' } },
];

/**
 * The jhash concatenation. Why the order differs by role: the outside node sees the client as source, the
 * inside node as destination, and both must hash (outer, inner) to land a flow in the same bucket.
 * order=packet hashes (source, destination) on both, which is asymmetric: only for demonstrating failure.
 */
export function hashFields(c: ResolvedBalancerConfig, ported: boolean, f: Family = IPV4): NftJson[] {
  const src = ported ? [payload(f.l3, 'saddr'), payload('th', 'sport')] : [payload(f.l3, 'saddr')];
  const dst = ported ? [payload(f.l3, 'daddr'), payload('th', 'dport')] : [payload(f.l3, 'daddr')];
  const outerIsSource = c.role === 'outside' || c.hash.order === 'packet';
  return [...(outerIsSource ? [...src, ...dst] : [...dst, ...src]), meta('l4proto')];
}

/** The regular chains the prerouting rules jump to. */
export const SIDE_SYN_CHAIN = 'side-syn';
export const FIREWALL_SYN_CHAIN = 'firewall-syn';
export const FRESH_CHAIN = 'fresh-start';

/** Everything a rule builder needs, computed once per render. */
export interface RuleContext {
  c: ResolvedBalancerConfig;
  side: NftJson;
  notSide: NftJson;
  markOf: Map<string, number>;
  /** The families steered (see familiesOf). */
  families: Family[];
  /** The firewall's `conn` set of a family: this node's record of the connections it saw start on that firewall. */
  connSet: (f: Firewall, fam: Family) => string;
  /** Statements that set the bucket's firewall mark from the jhash of the packet (ported: with the ports) and `map`. */
  steer: (fam: Family, ported: boolean, map?: string) => Rule;
  /** A pending switch of bucket maps: its time in seconds since the epoch (see RenderSwitch), or null. */
  switchAt: number | null;
  /** The ct event filter when a session table listens, else nothing. */
  events: Rule;
  /** The rules that give a new handshake its timeout policy (see handshakeTimeouts), at the head of the SYN chains. */
  handshake: Rule[];
}

/** The bucket map in force from a pending switch's time on (see RenderSwitch). */
export const BUCKETS_NEXT = 'buckets_next';

/**
 * The rule(s) that hash a packet with `conds`, then `tail`: one, or while a switch is pending one per side of its
 * time. The time comes first: the conditions may have effects (a set element used up) that must happen once.
 */
export function steering(x: RuleContext, fam: Family, conds: Rule, ported: boolean, tail: Rule = []): Rule[] {
  if (x.switchAt === null) return [[...conds, ...x.steer(fam, ported), ...tail]];
  const time = (op: string) => ({ match: { op, left: meta('time'), right: x.switchAt } });
  return [
    [time('<'), ...conds, ...x.steer(fam, ported), ...tail],
    [time('>='), ...conds, ...x.steer(fam, ported, BUCKETS_NEXT), ...tail],
  ];
}

/** The set of a family: `fresh` for IPv4, `fresh_v6` for IPv6. */
export const named = (name: string, fam: Family) => `${name}${fam.suffix}`;

export function fromFirewall(f: Firewall): Rule {
  const m: Rule = [eq(meta('iifname'), f.interface)];
  if (f.mac) m.push(eq(payload('ether', 'saddr'), f.mac.toLowerCase()));
  return m;
}

/**
 * Remember the connection a SYN or SYN-ACK starts, under the firewall it goes to (or came from): a node that sees
 * one direction only, or whose entry is an earlier connection's, gets packets conntrack refuses (`ct state
 * invalid`, so no ct mark to restore), and those follow this record, not a pin of an earlier connection or a bucket
 * that moved since. The tuple leaves every other firewall's set, so exactly one holds it.
 */
function recordConn(x: RuleContext, f: Firewall, fam: Family, tuple: NftJson[]): Rule {
  return [...x.c.firewalls.filter((o) => o !== f).map((o) => setOp('delete', tuple, x.connSet(o, fam))), setOp('update', tuple, x.connSet(f, fam))];
}

/**
 * The side's SYN chain. A SYN starts a connection: it follows the current table, never a ct mark or a pin of an
 * earlier connection with the same tuple (a client reusing its port within seconds meets that connection's entry on
 * a node that saw part of it). A SYN-ACK keeps its ct mark only if this node saw its SYN arrive from a firewall;
 * otherwise this node did not see the SYN (ECMP sent it elsewhere) and the hash puts the SYN-ACK where the SYN went.
 */
export function sideSynChain(x: RuleContext, labeled: Record<string, Rule>): Rule[] {
  const perFamily = (fam: Family): Rule[] => {
    const orig = ctOriginalTuple(fam);
    const hashSyn = steering(x, fam, [isFamily(fam), counter], true);
    labeled[`hash-syn${fam.label}`] = hashSyn[0];
    return [
      // The SYN vouches for one answer: it is used up, and a later connection with the same tuple shows its own.
      [
        ne(ctMark, 0),
        ackFlag,
        isFamily(fam),
        tcp,
        eq({ concat: orig }, `@${named('synseen', fam)}`),
        setOp('delete', orig, named('synseen', fam)),
        { return: null },
      ],
      ...hashSyn,
    ];
  };
  const afterwards = (fam: Family): Rule[] => [
    // Only a SYN or SYN-ACK that met an earlier connection's entry (conntrack attached it, or refused it) leaves a
    // mark in `fresh`: one that created its entry has nothing in its way, so a flood of SYNs costs no element.
    [stateIn(['established', 'invalid']), isFamily(fam), setOp('update', sideTuple(fam), named('fresh', fam))],
    // Set updates come after the steering: a full set ends its rule, and the packet must be steered all the same.
    ...(x.c.sessionTable ? x.c.firewalls.map((f) => [eq(meta('mark'), x.markOf.get(f.id)), isFamily(fam), ...recordConn(x, f, fam, sideTuple(fam))]) : []),
  ];
  return [
    ...x.handshake,
    // Traffic to this node itself is never steered (its SYN-ACKs included).
    [localDest, { return: null }],
    ...(x.c.sessionTable ? [[bareSyn, stateIn('new'), set({ ct: { key: 'label' } }, SIDE_LABEL), ...x.events]] : []),
    ...x.families.flatMap(perFamily),
    ...x.families.flatMap(afterwards),
    [accept],
  ];
}

/**
 * A TCP packet from the side takes the firewall the start of its connection went to, as this node's `conn` set of
 * that firewall records it (a SYN or SYN-ACK it steered, or a SYN from that firewall). Shared by the prerouting `conn`
 * rules and the `fresh` chain.
 */
export function connRule(x: RuleContext, f: Firewall, fam: Family): Rule {
  const conn = x.connSet(f, fam);
  return [
    x.side,
    tcp,
    isFamily(fam),
    eq({ concat: sideTuple(fam) }, `@${conn}`),
    setOp('update', sideTuple(fam), conn),
    counter,
    set(meta('mark'), x.markOf.get(f.id)),
    set(ctMark, meta('mark')),
    accept,
  ];
}

/**
 * Where the first packet of a new connection goes when it meets an entry its SYN or SYN-ACK could not create (see
 * the prerouting `fresh` rule): where that SYN or SYN-ACK went, as the `conn` sets recorded it, and only failing that
 * (no record: a full set, or no session table) the current table. Why not the current table first: a switch of the
 * bucket table may fall between the SYN-ACK and the connection's next packet (a client that sends its first data
 * seconds after connecting), and a node that saw the SYN-ACK alone (ECMP sent the SYN to a sibling) would then send
 * the rest of the connection to a firewall that never saw its start.
 */
export function freshChain(x: RuleContext): Rule[] {
  return x.families.flatMap((fam) => [
    ...(x.c.sessionTable ? x.c.firewalls.map((f) => connRule(x, f, fam)) : []),
    ...steering(x, fam, [isFamily(fam)], true, [accept]),
  ]);
}

/**
 * The firewall's SYN chain: a SYN or SYN-ACK from a firewall shows which firewall carries the connection now, so the
 * flow learns it afresh (its mark is cleared; the learn rule sets it).
 */
export function firewallSynChain(x: RuleContext): Rule[] {
  return [
    ...x.handshake,
    // A FIN or RST from a firewall that conntrack tracks (`new` too: a node that sees one direction only never sees
    // an answer): the far end closed this connection, so this node's record of its start goes (a later connection
    // with the same tuple that this node does not see start must not follow it); then it goes on as any packet of
    // its flow. Not one conntrack refused: then this node's entry is stuck (it saw the SYN, not the answer), the
    // side's last packets are refused too, and they need the record to the end (an earlier connection's pin is next
    // in line).
    ...(x.c.sessionTable
      ? x.families.map((fam) => [
          finOrRst,
          stateIn(['new', 'established']),
          isFamily(fam),
          ...x.c.firewalls.map((f) => setOp('delete', firewallTuple(fam), x.connSet(f, fam))),
          { return: null },
        ])
      : []),
    ...x.families.flatMap((fam) =>
      x.c.sessionTable ? x.c.firewalls.map((f) => [...fromFirewall(f), isFamily(fam), ...recordConn(x, f, fam, firewallTuple(fam))]) : [],
    ),
    // One that conntrack refused: the side's replies may meet an earlier connection's entry (see `fresh`).
    ...x.families.map((fam) => [isFamily(fam), stateIn('invalid'), setOp('update', firewallTuple(fam), named('fresh', fam)), { return: null }]),
    [set(ctMark, 0)],
    ...x.families.map((fam) => [bareSyn, isFamily(fam), setOp('update', ctOriginalTuple(fam), named('synseen', fam))]),
  ];
}

/**
 * The conntrack timeout policy of TCP handshakes this node sees start (a bare SYN creates the entry) and not
 * complete. Why: a balancer node tracks every flow of its side and a firewall only its share, so with the kernel's
 * SYN_SENT 120 s and SYN_RECV 60 s, spoofed SYNs fill a node's table at a third of the rate that fills three
 * firewalls'. Why it costs no connection: every SYN is steered afresh whatever entry it meets (see sideSynChain),
 * and the packets conntrack refuses follow this node's `conn` record, not the entry. Why at the head of the two SYN
 * chains: the kernel applies a policy only to the entry the packet creates, still unconfirmed, so the statement must
 * run after conntrack (at raw priority, before it, this kernel ignored it: 119 s left instead of 9); and only SYNs
 * reach those chains, so other packets pay nothing (a base chain of its own cost 64-byte packets 18 %, 5 of 5
 * paired rounds of bench/sandwich). A packet of an existing entry is ignored by the kernel. None when the config
 * sets 0 (the kernel's timeouts).
 */
export function handshakeTimeouts(c: ResolvedBalancerConfig, families: Family[]): { objects: DesiredCtTimeout[]; rules: Rule[] } {
  const secs = c.handshakeTimeoutSeconds;
  if (!secs) return { objects: [], rules: [] };
  const objects = families.map((fam): DesiredCtTimeout => ({
    name: `handshake${fam.suffix}_${secs}`,
    protocol: 'tcp',
    l3proto: fam.l3,
    policy: { syn_sent: secs, syn_recv: secs },
  }));
  return { objects, rules: families.map((fam, i) => [bareSyn, isFamily(fam), { 'ct timeout': objects[i].name }]) };
}
