// @fwlb/slb: the SLB tier's building blocks, for tests and for the inside node when it embeds the SLB.
export * from './schedule';
export * from './render';
export * from './kernel';
export * from './service';
export * from './errors';
export * from './app';
export * from './doctor';
export * from './member-health';
export * from './start';
export * from './metrics';
