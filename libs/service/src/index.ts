// @fwlb/service: what the node processes share: API errors and plumbing, config files, the bounded runner.
export * from './api-error';
export * from './http';
export * from './config-file';
export * from './runner';
export * from './cpu';
export * from './checks';
export * from './instance-lock';
export * from './atomic-file';
export * from './metrics';
export * from './openapi';
export * from './status-page';
export * from './log';
