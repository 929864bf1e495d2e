// The SLB config as validation resolves it (defaults filled in): types only, and what tells an L7 VIP apart; pure
// layer of libs/config. Apart from the validator so that the check budget can read VIPs without importing it.
import type { CheckSpec, TimerConfig } from '@fwlb/health';
import type { MemberConfig, PoolConfig, RuleConfig, VipConfig } from './slb-schema';

export type ResolvedMember = Readonly<Required<Omit<MemberConfig, 'pool' | 'proxyProtocol'>> & { pool?: string; proxyProtocol?: 'v1' | 'v2' }>;
export type ResolvedPool = Readonly<Required<Omit<PoolConfig, 'check' | 'timers'>> & { check?: CheckSpec; timers?: Required<TimerConfig> }>;
/** The fields only an L7 VIP has; resolved (defaults filled in) when `mode` is `http`, absent on an L4 VIP. */
type L7Fields = 'mode' | 'pools' | 'rules' | 'defaultPool' | 'forwardedFor' | 'tls' | 'snat';
export type ResolvedVip = Readonly<
  Required<Omit<VipConfig, 'members' | 'timers' | L7Fields>> & {
    timers: Required<TimerConfig>;
    members: readonly ResolvedMember[];
    mode?: 'http' | 'tcp';
    pools?: readonly ResolvedPool[];
    rules?: readonly Readonly<RuleConfig>[];
    defaultPool?: string;
    forwardedFor?: boolean;
    tls?: { certificate: string };
    /** L4 one-arm: the source address the connections leave with (none: the node's own on the way out). */
    snat?: { address?: string };
  }
>;
/** An L7 VIP (mode http: HAProxy serves it, rules to pools); the L4 ones are nft DNAT maps. */
export type ResolvedL7Vip = ResolvedVip & Required<Pick<ResolvedVip, 'mode' | 'pools' | 'rules' | 'defaultPool' | 'forwardedFor'>> & { mode: 'http' };
export const isL7 = (v: ResolvedVip): v is ResolvedL7Vip => v.mode === 'http';
/** A VIP HAProxy serves: an L7 VIP, or a TCP service it proxies connection by connection (mode tcp). */
export const isProxied = (v: ResolvedVip): boolean => v.mode === 'http' || v.mode === 'tcp';
