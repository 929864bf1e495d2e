// ajv schemas and types of the SLB tier: its config file, VIPs and members (also the API bodies); pure layer of libs/config.
import { checkSpecSchema, timersSchema, CheckSpec, TimerConfig } from '@fwlb/health';
import { apiSchema } from './balancer-schema';

/** Admin state of a member: `drain` takes no new sessions while established ones finish. */
export type MemberState = 'enabled' | 'drain';

export interface MemberConfig {
  /** The real server's address (RIP). */
  address: string;
  /** The real server's port; may differ from the VIP's (port translation). */
  port: number;
  /** Relative share of new sessions, 1-100. @default 1 */
  weight?: number;
  /** @default "enabled" */
  state?: MemberState;
}

export interface VipConfig {
  /** Stable id, used in the API path and in nft object names. */
  id: string;
  address: string;
  port: number;
  protocol: 'tcp' | 'udp';
  /** `sh`: source-hash persistence (one client address sticks to one member); `rr`: round robin. @default "rr" */
  scheduler?: 'sh' | 'rr';
  /** The pool's health check; the member's port is used when the check names none. @default {kind: "tcp"} */
  check?: CheckSpec;
  /** @default {interval: 1000, response: 500, retries: 3, deadInterval: 2000, rise: 2} */
  timers?: TimerConfig;
  /**
   * Panic threshold of the pool (Envoy's): when fewer than this share of the enabled members are up, the checks
   * are not believed and every enabled member takes new sessions (fail open). 0: no panic; with no member up the
   * VIP answers RST (TCP) or port unreachable (UDP) (fail closed). @default 0
   */
  panicThreshold?: number;
  members: MemberConfig[];
}

export interface SlbConfig {
  /** Name shown in /status. @default "slb" */
  name?: string;
  /** Interface that holds the VIP addresses (added as /32, labelled `<interface>:vip`). */
  interface: string;
  /** The nft table fwlb owns for the SLB (family ip). @default "fwlb_slb" */
  table?: string;
  /** Seed of the source-hash scheduler. @default 0 */
  seed?: number;
  api?: { listen?: string; token?: string; tokenFile?: string };
  /** VIPs changed through the API are saved here (atomically) and loaded at start; absent: API changes last until restart. */
  stateFile?: string;
  /** Seconds between periodic full reconciles. @default 10 */
  resyncSeconds?: number;
  /** Seconds between background reads of the kernel's counters; API reads answer from memory. @default 2 */
  countersSeconds?: number;
  vips?: VipConfig[];
}

const ipv4 = { type: 'string', format: 'ipv4' } as const;
const port = { type: 'integer', minimum: 1, maximum: 65535 } as const;

export const memberSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['address', 'port'],
  properties: {
    address: ipv4,
    port,
    weight: { type: 'integer', minimum: 1, maximum: 100 },
    state: { enum: ['enabled', 'drain'] },
  },
} as const;

/** A partial member update (PATCH): weight and state only; address and port name the member. */
export const memberPatchSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { weight: memberSchema.properties.weight, state: memberSchema.properties.state },
} as const;

export const vipSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'address', 'port', 'protocol', 'members'],
  properties: {
    id: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,31}$' },
    address: ipv4,
    port,
    protocol: { enum: ['tcp', 'udp'] },
    scheduler: { enum: ['sh', 'rr'] },
    check: checkSpecSchema,
    timers: timersSchema,
    panicThreshold: { type: 'number', minimum: 0, maximum: 1 },
    members: { type: 'array', maxItems: 256, items: memberSchema },
  },
} as const;

export const slbSchema = {
  $id: 'fwlb/slb-config',
  type: 'object',
  additionalProperties: false,
  required: ['interface'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 64 },
    // The address label is "<interface>:vip" and labels are at most 15 characters.
    interface: { type: 'string', pattern: '^[A-Za-z0-9_.@-]{1,11}$' },
    table: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_]{0,31}$' },
    seed: { type: 'integer', minimum: 0, maximum: 0xffffffff },
    api: apiSchema,
    stateFile: { type: 'string', minLength: 1 },
    resyncSeconds: { type: 'number', minimum: 1, maximum: 3600 },
    countersSeconds: { type: 'number', minimum: 0.2, maximum: 3600 },
    vips: { type: 'array', maxItems: 4096, items: vipSchema },
  },
} as const;
