// @fwlb/config: ajv schemas, types and validation of config files and API bodies (pure).
export * from './errors';
export * from './balancer-schema';
export * from './bgp';
export * from './validate';
export * from './slb-schema';
export * from './slb-resolved';
export * from './validate-slb';
export * from './check-budget';
export * from './check-problems';
export * from './address-class';
export * from './reference';
export * from './reload';
export { ruleCovers, pathRegexProblem } from './validate-vip-mode';
