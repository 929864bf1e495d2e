// Check specifications (one per kind) and their JSON schema; pure layer of libs/health.

export interface SteerOptions {
  /** Source address of the probe. */
  source?: string;
  /** fwmark of the probe, to steer it through a chosen firewall. */
  mark?: number;
  /** Device the probe must leave by. */
  device?: string;
}

export interface IcmpSpec extends SteerOptions {
  kind: 'icmp';
}
export interface TcpSpec extends SteerOptions {
  kind: 'tcp';
  port?: number;
  /** How the checker closes: FIN (default) or RST. */
  close?: 'fin' | 'rst';
}
export interface TcpHalfOpenSpec extends SteerOptions {
  kind: 'tcp-half-open';
  port?: number;
}
export interface HttpSpec extends SteerOptions {
  kind: 'http';
  port?: number;
  method?: 'GET' | 'HEAD';
  path?: string;
  host?: string;
  /** Status codes counted as up. @default [200] */
  expect?: number[];
  /** Most bytes read from the response. @default 65536 */
  readMax?: number;
  /**
   * For a server that expects the PROXY protocol: the check sends a health check's header first (v1 `PROXY UNKNOWN`,
   * v2 a LOCAL command), which tells the server to use the connection's own addresses. Set by the SLB for a member
   * with `proxyProtocol`.
   */
  proxy?: 'v1' | 'v2';
}
export interface HttpContentSpec extends Omit<HttpSpec, 'kind'> {
  kind: 'http-content';
  /** The body must contain this string ... */
  contains?: string;
  /** ... or match this regular expression. */
  regex?: string;
}

export type CheckSpec = IcmpSpec | TcpSpec | TcpHalfOpenSpec | HttpSpec | HttpContentSpec;

const steer = {
  source: { type: 'string', format: 'ipv4' },
  mark: { type: 'integer', minimum: 1, maximum: 0xffffffff },
  device: { type: 'string', pattern: '^[A-Za-z0-9_.:@-]{1,15}$' },
};
const port = { type: 'integer', minimum: 1, maximum: 65535 };
const http = {
  ...steer,
  port,
  method: { enum: ['GET', 'HEAD'] },
  path: { type: 'string', pattern: '^/[\\x21-\\x7e]*$' },
  host: { type: 'string', pattern: '^[A-Za-z0-9.:\\[\\]-]{1,255}$' },
  expect: { type: 'array', minItems: 1, items: { type: 'integer', minimum: 100, maximum: 599 } },
  readMax: { type: 'integer', minimum: 64, maximum: 1048576 },
  proxy: { enum: ['v1', 'v2'] },
};

/** JSON schema of a check spec (ajv, additionalProperties false); the timers are validated by validateTimers. */
export const checkSpecSchema = {
  type: 'object',
  required: ['kind'],
  oneOf: [
    { type: 'object', additionalProperties: false, properties: { kind: { const: 'icmp' }, ...steer } },
    { type: 'object', additionalProperties: false, properties: { kind: { const: 'tcp' }, ...steer, port, close: { enum: ['fin', 'rst'] } } },
    { type: 'object', additionalProperties: false, properties: { kind: { const: 'tcp-half-open' }, ...steer, port } },
    { type: 'object', additionalProperties: false, properties: { kind: { const: 'http' }, ...http } },
    {
      type: 'object',
      additionalProperties: false,
      properties: {
        kind: { const: 'http-content' },
        ...http,
        contains: { type: 'string', minLength: 1, maxLength: 4096 },
        regex: { type: 'string', minLength: 1, maxLength: 1024 },
      },
      anyOf: [
        { properties: { contains: { type: 'string' } }, required: ['contains'] },
        { properties: { regex: { type: 'string' } }, required: ['regex'] },
      ],
    },
  ],
} as const;

/**
 * The smallest timers a config may ask for, in ms. Why these: a check is a probe sent, a reply awaited and a
 * verdict passed between two processes; at an interval of 50 ms one member already costs 20 checks a second, and
 * 256 members at 1 ms cost most of a core here (the agent 77 %, the probe helper 57 %), so below 50 ms a config
 * spends the node's CPU on checking rather than on deciding. A response window under 10 ms is shorter than the
 * scheduling delays of a loaded 2-core host, so a healthy member would time out. A dead member is checked at
 * most as often as a live one.
 */
export const TIMER_FLOORS = { interval: 50, response: 10, timeout: 50, deadInterval: 50 } as const;

export const timersSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['interval', 'response', 'retries'],
  // Why the maxima: a timer beyond 2^31-1 ms fires after 1 ms in Node.js; one hour is already more than any check needs.
  properties: {
    interval: { type: 'number', minimum: TIMER_FLOORS.interval, maximum: 3600000 },
    response: { type: 'number', minimum: TIMER_FLOORS.response, maximum: 3600000 },
    retries: { type: 'integer', minimum: 1, maximum: 1000 },
    timeout: { type: 'number', minimum: TIMER_FLOORS.timeout, maximum: 3600000 },
    deadInterval: { type: 'number', minimum: TIMER_FLOORS.deadInterval, maximum: 3600000 },
    rise: { type: 'integer', minimum: 1, maximum: 1000 },
    jitter: { type: 'number', minimum: 0, exclusiveMaximum: 1 },
  },
} as const;
