// @fwlb/health: checker kinds behind one interface, the pure timer state machine, and the monitor that runs them.
export * from './timer';
export * from './check-spec';
export * from './http-response';
export * from './content-match';
export * from './content-matcher';
export * from './probe-helper';
export * from './checker';
export * from './create-checker';
export * from './icmp';
export * from './tcp';
export * from './tcp-half-open';
export * from './http';
export * from './http-content';
export * from './monitor';
