// How much later than usual an admin change that moves many sessions takes effect; pure layer of apps/balancer.

/**
 * Below this many sessions in the moved buckets the usual lead (a change takes effect 2 to 3 s ahead)
 * covers their read and their pins. A read of at least this many also measures the node's read rate.
 */
export const LEAD_MIN_SESSIONS = 20_000;
/** Records a ms a node reads from Redis before it has measured its own rate. */
const READ_PER_MS_UNMEASURED = 100;
/** Pins a ms the kernel takes: bench/pin-change measured about 330, taken lower for a loaded node. */
const PINS_PER_MS = 250;
/** At most: the request answers once the change is in force, and fwlbctl waits 10 s by default. */
export const LEAD_MAX_MS = 8_000;

/**
 * The extra lead (ms) for a change whose moved buckets hold `sessions` records, on a node that reads `readPerMs`
 * records a ms (null: not measured yet): the time to read them and to pin them, 0 below LEAD_MIN_SESSIONS, at most
 * LEAD_MAX_MS.
 */
export function changeLeadMs(sessions: number, readPerMs: number | null): number {
  if (sessions < LEAD_MIN_SESSIONS) return 0;
  return Math.min(LEAD_MAX_MS, Math.ceil(sessions / (readPerMs ?? READ_PER_MS_UNMEASURED) + sessions / PINS_PER_MS));
}
