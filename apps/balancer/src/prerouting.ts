// The prerouting chain as an ordered list of named builders, each with the reason for its place: the order is the
// steering's correctness (golden dumps in test/fixtures/golden show it as text). Pure layer of apps/balancer.
import type { ResolvedBalancerConfig } from '@fwlb/config';
import type { NftJson } from '@fwlb/nft';
import {
  accept,
  connRule,
  counter,
  counterBy,
  SENT_COUNTERS,
  ctMark,
  ctOriginalTuple,
  eq,
  FIREWALL_SYN_CHAIN,
  FRESH_CHAIN,
  fromFirewall,
  hashFields,
  IPV4,
  IPV6,
  isFamily,
  localDest,
  meta,
  named,
  ne,
  payload,
  RuleContext,
  set,
  setOp,
  SIDE_LABEL,
  SIDE_SYN_CHAIN,
  sideTuple,
  stateIn,
  steering,
  synFinRst,
  synFlag,
  tcp,
  tcpUdp,
} from './rules';

type Firewall = ResolvedBalancerConfig['firewalls'][number];
type Rule = NftJson[];

/** What a render knows beyond the config: the marks restored at once, the suspect firewalls, whether any is live. */
export interface PreroutingInput {
  restoreMarks: number[];
  suspect: Firewall[];
  suspectMarks: number[];
  anyLive: boolean;
}

/** Adds a rule; a label names it for /status, which reads its counter. */
type Emit = (label: string | null, r: Rule) => void;

export interface PreroutingBuilder {
  name: string;
  /** Why it stands where it stands. */
  why: string;
  build(x: RuleContext, o: PreroutingInput, emit: Emit): void;
}

const prefixes = (pools: readonly string[]) =>
  pools.map((p) => {
    const [addr, len] = p.split('/');
    return len === undefined ? addr : { prefix: { addr, len: Number(len) } };
  });

/**
 * A packet from the side to a firewall's NAT pool (an address it SNATed a connection to, or publishes a service on)
 * goes to that firewall: no other firewall can translate it back, and no state is needed for it. Rendered only for
 * firewalls with pools, and per family only for the pools of that family (the pools are canonical: a host has no
 * `/len`).
 */
function natPoolRules(x: RuleContext, emit: Emit): void {
  for (const fam of x.families) {
    const poolsOf = (f: Firewall) => f.natPools.filter((p) => (p.includes(':') ? IPV6 : IPV4) === fam);
    const withPools = x.c.firewalls.filter((f) => poolsOf(f).length);
    if (!withPools.length) continue;
    const daddr = payload(fam.l3, 'daddr');
    // A connection opened to a published address starts here: its record needs its orientation like any other's.
    if (x.c.sessionTable)
      emit(null, [
        x.side,
        stateIn('new'),
        isFamily(fam),
        eq(daddr, { set: prefixes(withPools.flatMap(poolsOf)) }),
        set({ ct: { key: 'label' } }, SIDE_LABEL),
        ...x.events,
      ]);
    for (const f of withPools)
      emit(`nat-pool:${f.id}${fam.label}`, [
        x.side,
        isFamily(fam),
        eq(daddr, { set: prefixes(poolsOf(f)) }),
        counter,
        set(meta('mark'), x.markOf.get(f.id)),
        set(ctMark, meta('mark')),
        accept,
      ]);
  }
}

/**
 * A packet a firewall forwarded shows that this firewall holds its flow, so a flow whose ct mark names another
 * firewall takes this one. Two rules first: a packet that came from its flow's firewall, the common case, leaves at
 * one set lookup (by interface, or by interface and MAC for firewalls that share a segment); only the others meet
 * the per-firewall rules, whose counters count the flows that moved.
 */
function relearnRules(x: RuleContext, emit: Emit): void {
  const { c, notSide } = x;
  const own = (withMac: boolean) => c.firewalls.filter((f) => !!f.mac === withMac);
  const plain = own(false);
  if (plain.length)
    emit(null, [
      notSide,
      ne(ctMark, 0),
      eq({ concat: [meta('iifname'), ctMark] }, { set: plain.map((f) => ({ concat: [f.interface, x.markOf.get(f.id)] })) }),
      accept,
    ]);
  const withMac = own(true);
  if (withMac.length)
    emit(null, [
      notSide,
      ne(ctMark, 0),
      eq(
        { concat: [meta('iifname'), payload('ether', 'saddr'), ctMark] },
        { set: withMac.map((f) => ({ concat: [f.interface, f.mac!.toLowerCase(), x.markOf.get(f.id)] })) },
      ),
      accept,
    ]);
  // A reset moves nothing: a firewall that answers a packet it has no state for with a reset of its own would
  // otherwise take the flow. ICMP errors are left out by the protocol match below for the same reason.
  emit(null, [notSide, ne(ctMark, 0), tcp, eq({ '&': [payload('tcp', 'flags'), 'rst'] }, 'rst'), accept]);
  for (const f of c.firewalls) emit(`relearn:${f.id}`, [...fromFirewall(f), ne(ctMark, 0), tcpUdp, counter, set(ctMark, x.markOf.get(f.id)), accept]);
}

/** The prerouting chain, first rule first. */
export const PREROUTING: readonly PreroutingBuilder[] = [
  {
    name: 'link-local-v6',
    why: 'link-local and multicast IPv6 (neighbour discovery, router advertisements, MLD) belongs to the link: never steered, or a fwmark rule would send it to a firewall table',
    build(x, _o, emit) {
      if (!x.families.includes(IPV6)) return;
      emit(null, [
        x.side,
        isFamily(IPV6),
        eq(payload('ip6', 'daddr'), { set: [{ prefix: { addr: 'fe80::', len: 10 } }, { prefix: { addr: 'ff00::', len: 8 } }] }),
        accept,
      ]);
    },
  },
  {
    name: 'heard',
    why: 'a packet from a suspect firewall proves that it still forwards this flow, whichever way the packet then goes; keyed by the original tuple, the same in both directions whatever NAT does on this node; rendered only for suspect firewalls',
    build(x, o, emit) {
      for (const fam of x.families)
        for (const f of o.suspect) emit(null, [...fromFirewall(f), isFamily(fam), tcpUdp, setOp('update', ctOriginalTuple(fam), named('heard', fam))]);
    },
  },
  {
    name: 'nat-pool',
    why: 'before any state or hash: return traffic to a NATed connection can only go to the firewall that translated it, and needs no state, so it survives any node losing its own',
    build: (x, _o, emit) => natPoolRules(x, emit),
  },
  {
    name: 'syn',
    why: "a SYN starts a connection and follows the current table, never an earlier connection's mark; every other packet fails this at its third comparison",
    build(x, o, emit) {
      if (o.anyLive) emit(null, [x.side, tcp, synFlag, { jump: { target: SIDE_SYN_CHAIN } }]);
    },
  },
  {
    name: 'fresh',
    why: "a new connection whose SYN or SYN-ACK conntrack refused (an earlier connection's entry of the opposite orientation is in the way, or a SYN-ACK that met no entry) gets its next packet attached to an entry: that packet follows the connection's start (the fresh-start chain), before the restore would apply an earlier connection's mark",
    build(x, o, emit) {
      if (!o.anyLive) return;
      for (const fam of x.families) {
        const fresh = named('fresh', fam);
        emit(null, [
          x.side,
          tcp,
          isFamily(fam),
          stateIn(['new', 'established']),
          eq({ concat: sideTuple(fam) }, `@${fresh}`),
          setOp('delete', sideTuple(fam), fresh),
          { jump: { target: FRESH_CHAIN } },
        ]);
      }
    },
  },
  {
    name: 'restore',
    why: "the fast path: an established packet from the side takes its flow's mark (and counts on its firewall's `sent` counter) before the fib lookup below; safe because a flow to this node itself never carries a firewall mark; only restorable marks, so a flow on a firewall whose link is down is re-hashed instead of black-holed",
    build(x, o, emit) {
      // The counter map is the match: a mark not restorable is not in it, and ends the rule.
      if (o.restoreMarks.length) emit('restore', [x.side, counterBy(ctMark, SENT_COUNTERS), set(meta('mark'), ctMark), accept]);
    },
  },
  {
    name: 'restore-heard',
    why: 'a flow on a suspect firewall keeps it while that firewall is heard forwarding it (see heard)',
    build(x, o, emit) {
      if (!o.suspectMarks.length) return;
      for (const fam of x.families)
        emit(`restore-heard${fam.label}`, [
          x.side,
          eq(ctMark, { set: o.suspectMarks }),
          isFamily(fam),
          tcpUdp,
          eq({ concat: ctOriginalTuple(fam) }, `@${named('heard', fam)}`),
          counter,
          set(meta('mark'), ctMark),
          accept,
        ]);
    },
  },
  {
    name: 'firewall-syn',
    why: "a SYN or SYN-ACK from a firewall shows which firewall carries the connection now: its mark is cleared, so learning below takes that firewall; a FIN or RST ends this node's record of the connection's start (the conn sets), so a later connection with the same tuple never follows it",
    build(x, _o, emit) {
      // With a session table, a FIN or RST goes there too: it ends this node's record of the connection's start.
      emit(null, [x.notSide, tcp, x.c.sessionTable ? synFinRst : synFlag, { jump: { target: FIREWALL_SYN_CHAIN } }]);
    },
  },
  {
    name: 'relearn',
    why: 'a node without state guessed from the pins and the hash when the side spoke first; a packet from another firewall corrects that guess before the established packet leaves; a reset and ICMP errors move nothing',
    build(x, _o, emit) {
      if (x.c.ingressLearning) relearnRules(x, emit);
    },
  },
  {
    name: 'firewall-established',
    why: 'an established packet from a firewall leaves here: learning needs ct mark 0, everything else is for the side',
    build(x, _o, emit) {
      emit(null, [x.notSide, ne(ctMark, 0), accept]);
    },
  },
  {
    name: 'local',
    why: 'traffic to this node itself (API, probes) is never steered; only a packet that was not restored pays the fib lookup',
    build(x, _o, emit) {
      emit(null, [x.side, localDest, accept]);
    },
  },
  {
    name: 'learn',
    why: 'a flow a firewall started (or this node has no state for) takes the firewall its first packet came from',
    build(x, _o, emit) {
      if (x.c.ingressLearning)
        for (const f of x.c.firewalls) emit(`learn:${f.id}`, [...fromFirewall(f), eq(ctMark, 0), counter, set(ctMark, x.markOf.get(f.id)), ...x.events]);
    },
  },
  {
    name: 'synseen-spent',
    why: "a packet from a firewall that conntrack refuses after a SYN this node saw (the client's ACK or data, with the entry still waiting for a SYN-ACK) shows that the handshake's SYN-ACK went through another node: that SYN vouches for no answer any more, or a later connection with the same tuple, whose SYN this node does not see, would have its SYN-ACK take this one's firewall; after learning, so an established packet from a firewall never meets it, and only refused packets pay the lookup",
    build(x, _o, emit) {
      for (const fam of x.families) {
        const seen = named('synseen', fam);
        emit(null, [x.notSide, stateIn('invalid'), tcp, isFamily(fam), eq({ concat: sideTuple(fam) }, `@${seen}`), setOp('delete', sideTuple(fam), seen)]);
      }
    },
  },
  {
    name: 'not-side',
    why: 'everything below is for packets from the side: any other packet leaves with one comparison',
    build(x, _o, emit) {
      emit(null, [x.notSide, accept]);
    },
  },
  {
    name: 'side-label',
    why: 'the side label marks a flow whose first packet came from the side, once, when its entry is created: an established flow re-hashed here was learned from a firewall, and labelling it would reverse its orientation in the session table',
    build(x, _o, emit) {
      if (x.c.sessionTable) emit(null, [x.side, stateIn('new'), set({ ct: { key: 'label' } }, SIDE_LABEL), ...x.events]);
    },
  },
  {
    name: 'conn',
    why: "a packet without a ct mark of a connection this node saw start follows that start's firewall, before any pin: a pin may be an earlier connection's with the same tuple",
    build(x, o, emit) {
      if (!x.c.sessionTable || !o.anyLive) return;
      for (const fam of x.families) for (const f of x.c.firewalls) emit(`conn:${f.id}${fam.label}`, connRule(x, f, fam));
    },
  },
  {
    name: 'pin',
    why: 'a flow this node has no state for (a restart, conntrack lost, a non-SYN first packet) is looked up in the pins before it is hashed; a miss ends the rule and leaves the mark 0, so hashing follows',
    build(x, _o, emit) {
      if (!x.c.sessionTable) return;
      for (const fam of x.families)
        emit(`pinned${fam.label}`, [
          x.side,
          isFamily(fam),
          tcpUdp,
          set(meta('mark'), { map: { key: { concat: hashFields(x.c, true, fam) }, data: `@${named('pins', fam)}` } }),
          counter,
          set(ctMark, meta('mark')),
          accept,
        ]);
    },
  },
  {
    name: 'hash',
    why: 'last: what nothing above decided follows the bucket table; with no live firewall, a new flow is dropped (counted) rather than sent nowhere',
    build(x, o, emit) {
      for (const fam of x.families) {
        if (!o.anyLive) {
          emit(`no-firewall-drop${fam.label}`, [x.side, isFamily(fam), counter, { drop: null }]);
          continue;
        }
        steering(x, fam, [x.side, isFamily(fam), tcpUdp, counter], true).forEach((r, i) => emit(i ? null : `hash-tcp-udp${fam.label}`, r));
        steering(x, fam, [x.side, isFamily(fam), ne(meta('l4proto'), { set: ['tcp', 'udp'] }), counter], false).forEach((r, i) =>
          emit(i ? null : `hash-other${fam.label}`, r),
        );
      }
    },
  },
];

/** The prerouting rules in order, with the labels /status reads counters of. */
export function preroutingRules(x: RuleContext, o: PreroutingInput, labeled: Record<string, Rule>): Rule[] {
  const rules: Rule[] = [];
  const emit: Emit = (label, r) => {
    rules.push(r);
    if (label) labeled[label] = r;
  };
  for (const b of PREROUTING) b.build(x, o, emit);
  return rules;
}
