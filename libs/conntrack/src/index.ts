// @fwlb/conntrack: ctnetlink codec (pure), dumps and NEW/DESTROY event streams through the netlink package.
export * from './codec';
export * from './conntrack';
export * from './table-use';
