// Prometheus metrics plumbing both node processes share: a registry per process with the standard process
// metrics, and the /metrics route; shell layer. The metrics themselves read their owners' state at scrape time.
import type { FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export { Counter, Gauge, Histogram, Registry };

export function newRegistry(): Registry {
  const r = new Registry();
  // The event loop's lag sampled every 100 ms, not prom-client's 10: each sample wakes an idle process (200 wakeups a
  // second were a third of an idle SLB's CPU), and a lag worth an alarm is far longer than either.
  collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 100 });
  // Why: these three are gauges named like counters, which `promtool check metrics` rejects.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) r.removeSingleMetric(name);
  return r;
}

/** GET /metrics in the Prometheus text format (no auth, like /health). */
/**
 * A render larger than this is reused for up to CACHE_MS (1,000 VIPs × 8 members: 40,000 series, 920 kB). By size,
 * not by time: a slow render of a small registry on a busy machine must not make the next scrape stale.
 */
const LARGE_BYTES = 256 * 1024;
const CACHE_MS = 1000;

/**
 * GET /metrics, after `refresh` (the kernel's counters read now). A small registry is rendered for every scrape; a large one (thousands of members) is rendered at
 * most once a second and the text reused meanwhile, so a scraper in a loop cannot take the event loop.
 */
export function metricsRoute(app: FastifyInstance, registry: Registry, refresh?: () => Promise<unknown>): void {
  let cache: { text: Buffer; at: number; large: boolean } | null = null;
  let rendering: Promise<Buffer> | null = null;
  const render = async () => {
    // A read that fails leaves the values of the last one: the scrape still answers.
    await refresh?.().catch(() => undefined);
    const text = Buffer.from(await registry.metrics());
    cache = { text, at: Date.now(), large: text.length > LARGE_BYTES };
    return text;
  };
  app.get('/metrics', async (_req, reply) => {
    reply.type(registry.contentType);
    if (cache?.large && Date.now() - cache.at < CACHE_MS) return reply.send(cache.text);
    rendering ??= render().finally(() => (rendering = null));
    return reply.send(await rendering);
  });
}

type Read<L extends string> = () => [Partial<Record<L, string>>, number][];

/** A counter whose value is read from elsewhere at scrape time (a kernel counter, a metric kept by its owner). */
export function counterFrom<L extends string>(registry: Registry, name: string, help: string, labelNames: L[], read: Read<L>): Counter<L> {
  return new Counter<L>({ name, help, labelNames, registers: [registry], collect: refill(read, (m, l, v) => v > 0 && (m as Counter<L>).inc(l, v)) });
}

/** A gauge whose value is read at scrape time. */
export function gaugeFrom<L extends string>(registry: Registry, name: string, help: string, labelNames: L[], read: Read<L>): Gauge<L> {
  return new Gauge<L>({ name, help, labelNames, registers: [registry], collect: refill(read, (m, l, v) => (m as Gauge<L>).set(l, v)) });
}

/** A collect() that empties the metric and puts in what `read` gives now. */
function refill<L extends string>(read: Read<L>, put: (m: Counter<L> | Gauge<L>, labels: Partial<Record<L, string>>, v: number) => unknown) {
  return function (this: Counter<L> | Gauge<L>) {
    this.reset();
    for (const [labels, v] of read()) if (Number.isFinite(v)) put(this, labels, v);
  };
}
