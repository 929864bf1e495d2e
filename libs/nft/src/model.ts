// Desired-state model of one nft table owned by fwlb; pure layer of libs/nft.
import { createHash } from 'node:crypto';

/** One nft JSON statement or expression, as the JSON interface (libnftables-json(5)) spells it. */
export type NftJson = unknown;

/**
 * A base chain (with a hook) or, without `hook`, a regular chain that rules reach by `jump`. A regular chain comes
 * before the chains that jump to it: one transaction adds them in order.
 */
export interface DesiredChain {
  name: string;
  type?: 'filter' | 'nat' | 'route';
  hook?: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  prio?: number;
  policy?: 'accept' | 'drop';
  /** Each rule is its list of statements. */
  rules: NftJson[][];
}

/** A map element's value: a number (a mark), or the name of an object (a counter). */
export type MapValue = number | string;

export interface DesiredMap {
  name: string;
  /** Key type, e.g. "mark", or the types of a concatenation, e.g. ["ipv4_addr", "inet_service"]. */
  type: string | string[];
  /** Value type, e.g. "mark", or "counter" for a map of named counters. */
  map: string;
  /**
   * [key, value] pairs; keys are unique. A key is a number or a `{concat: [...]}` as nft lists it; a value is a
   * number, or an object's name in a map of objects.
   */
  elements: [NftJson, MapValue][];
  /**
   * Its elements are kept by their owner, not by the table's diff: `elements` are given only to a map the diff
   * creates, and a read does not list them (see NftRunner.read). Why: nft lists a map element by element, and the
   * diff of a map of a million flows costs seconds of listing and comparing on every pass.
   */
  owned?: boolean;
}

/**
 * A named set whose elements the kernel fills itself (`update @set` from a rule) and expires after `timeout`
 * seconds. Reconcile creates it and never touches its elements.
 */
export interface DesiredSet {
  name: string;
  type: string | string[];
  timeout: number;
  /** Most elements it holds; updates beyond that are not recorded. */
  size: number;
}

/**
 * A conntrack timeout policy (`ct timeout` object) that rules attach to the entries new packets create. Its name
 * carries its values, so a changed policy is a new object and the old one goes once no rule names it. Declared and
 * deleted in text: nft 1.0.6 drops a policy given in JSON and aborts on a JSON delete of one (see ctTimeoutText).
 */
export interface DesiredCtTimeout {
  name: string;
  protocol: 'tcp';
  l3proto: 'ip' | 'ip6';
  /** Seconds by TCP state, e.g. { syn_sent: 10 }; states left out keep the kernel's timeouts. */
  policy: Record<string, number>;
}

export interface DesiredTable {
  family: 'inet' | 'ip' | 'ip6';
  name: string;
  /** Conntrack timeout policies; rules refer to them with `{"ct timeout": name}`. */
  ctTimeouts?: DesiredCtTimeout[];
  maps: DesiredMap[];
  /** Dynamic sets (created once, elements left to the kernel). */
  sets?: DesiredSet[];
  chains: DesiredChain[];
  /** Named counter objects; rules refer to them with `{counter: "name"}`, and they keep counting when a chain is rewritten. */
  counters?: string[];
}

/**
 * Each rule carries a comment with a digest of its desired statements. Why: nft's read-back normalises
 * expressions (sets, implicit operators, dependencies), so comparing the JSON we wrote with what the kernel
 * lists is fragile; comparing digests in rule order is exact.
 */
export function ruleDigest(stmts: NftJson[]): string {
  return 'fwlb:' + createHash('sha256').update(JSON.stringify(stmts)).digest('hex').slice(0, 16);
}

/** What we read back from the kernel, reduced to what reconcile compares. */
export interface ActualTable {
  handle: number;
  chains: Map<string, { type?: string; hook?: string; prio?: number; policy?: string; handle: number; ruleComments: (string | undefined)[] }>;
  /** Elements by `elementKey` of their key; the handle when the listing gave one. */
  maps: Map<string, { type: string | string[]; map: string; elements: ReadonlyMap<string, MapValue>; handle?: number }>;
  /** Named sets (not maps) by name, with their type and timeout. */
  sets: Map<string, { type: string | string[]; timeout?: number }>;
  /** Counter values of rules that have one, keyed by the rule's comment digest. */
  counters: Map<string, { packets: number; bytes: number }>;
  /** Named counter objects by name. */
  namedCounters: Map<string, { packets: number; bytes: number }>;
  /** Names of the table's ct timeout objects. */
  ctTimeouts?: Set<string>;
}

/** A map key as a string, for comparing desired and listed elements (JSON of the key as nft lists it). */
export function elementKey(k: NftJson): string {
  return JSON.stringify(k);
}
