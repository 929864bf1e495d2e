// @fwlb/flowhash: canonical flow keys, kernel-identical jhash and the consistent bucket table (pure).
export * from './jhash';
export * from './flow-key';
export * from './maglev';
