// @fwlb/slb: the SLB tier's core (VIPs as nft DNAT maps, member health, the /vips API, start): used by the fwlb-slb agent
// (apps/slb) and by the inside balancer node when it embeds the SLB (no app imports another).
export * from './schedule';
export * from './render';
export * from './kernel';
export * from './kernel-diff';
export * from './kernel-model';
export * from './service';
export * from './kernel-port';
export * from './monitor-pool';
export * from './group-commit';
export * from './vip-views';
export * from './vip-plan';
export * from './errors';
export * from './app';
export * from './doctor';
export * from './member-health';
export * from './start';
export * from './metrics';
export * from './haproxy-render';
export * from './haproxy';
export * from './haproxy-cli';
export * from './table-writer';
export * from './l7-applier';
export * from './applied-vips';
export * from './local-services';
export * from './vip-source';
