// @fwlb/fwlbctl: the REST client and commands of fwlbctl, for tests.
export * from './client';
export * from './commands';
