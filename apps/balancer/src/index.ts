// @fwlb/balancer: the node agent's building blocks, for tests and for apps that embed it.
export * from './render';
export * from './reconciler';
export * from './app';
export * from './errors';
export * from './doctor';
export * from './session-sync';
export * from './session-layer';
export * from './pins';
export * from './pin-maps';
export { IPV4, IPV6 } from './rules';
export * from './membership';
export * from './agreement';
export * from './admin-state';
export * from './metrics';
export * from './announcer';
export * from './reload';
export * from './change-lead';
export * from './history';
