// @fwlb/routing: policy routing (fwmark rules and per-firewall tables) through rtnetlink.
export * from './model';
export * from './errors';
export * from './rtnl';
export * from './bird';
export * from './watch';
