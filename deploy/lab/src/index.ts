// @fwlb/lab: the namespace sandwich used by the integration tests, the benchmarks and `npm run lab`.
export * from './topology';
export * from './netns';
export * from './lab';
export * from './scenario';
export * from './churn';
export type { DriveSpec, DriveReport, HttpRequestSpec } from './agent';
export * from './slb-scale';
export * from './bench-tools';
export * from './redis-servers';
export * from './conntrackd';
export * from './keepalived';
export * from './redundant-deploy';
export * from './bird';
export * from './proxy-protocol';
