// Prometheus metrics plumbing both node processes share: a registry per process with the standard process
// metrics, and the /metrics route; shell layer. The metrics themselves read their owners' state at scrape time.
import type { FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export { Counter, Gauge, Histogram, Registry };

export function newRegistry(): Registry {
  const r = new Registry();
  collectDefaultMetrics({ register: r });
  // Why: these three are gauges named like counters, which `promtool check metrics` rejects.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) r.removeSingleMetric(name);
  return r;
}

/** GET /metrics in the Prometheus text format (no auth, like /health). */
export function metricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
}

/** A counter whose value is read from elsewhere at scrape time (a kernel counter, a metric kept by its owner). */
export function counterFrom<L extends string>(registry: Registry, name: string, help: string, labelNames: L[], read: () => [Partial<Record<L, string>>, number][]): Counter<L> {
  return new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, v] of read()) if (Number.isFinite(v) && v > 0) this.inc(labels, v);
    },
  });
}

/** A gauge whose value is read at scrape time. */
export function gaugeFrom<L extends string>(registry: Registry, name: string, help: string, labelNames: L[], read: () => [Partial<Record<L, string>>, number][]): Gauge<L> {
  return new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, v] of read()) if (Number.isFinite(v)) this.set(labels, v);
    },
  });
}
