// Prometheus metrics plumbing both node processes share: a registry per process with the standard process
// metrics, and the /metrics route; shell layer. The metrics themselves read their owners' state at scrape time.
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
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
const STALE_MS = 3000;

/**
 * GET /metrics, after `refresh` (the kernel's counters read now). A small registry is rendered for every scrape; a
 * large one (thousands of members) at most once a second, in the background while scrapes keep coming (the text they
 * get is then at most STALE_MS old), so a scraper in a loop can neither take the event loop nor wait for a render.
 */
export function metricsRoute(app: FastifyInstance, registry: Registry, refresh?: () => Promise<unknown>): void {
  let cache: Rendered | null = null;
  let rendering: Promise<Rendered> | null = null;
  const render = async (): Promise<Rendered> => {
    // A read that fails leaves the values of the last one: the scrape still answers.
    await refresh?.().catch(() => undefined);
    const text = Buffer.from(await renderYielding(registry));
    const large = text.length > LARGE_BYTES;
    // A large render is compressed before it replaces the last one: scrapers meanwhile get the last one's bytes
    // rather than wait for the compression (about 10 ms of a thread-pool thread for 920 kB).
    const gz = large ? await gzipAsync(text).catch(() => null) : null;
    cache = { text, at: Date.now(), large, gzip: gz ? Promise.resolve(gz) : null };
    return cache;
  };
  app.get('/metrics', async (req, reply) => {
    reply.type(registry.contentType);
    const next = () => (rendering ??= render().finally(() => (rendering = null)));
    // A large render older than CACHE_MS but younger than STALE_MS is served while the next one is made, so scrapers
    // in a loop never wait for a render; an older one (a scraper every 15 s) waits for a fresh one.
    const age = cache?.large ? Date.now() - cache.at : Infinity;
    if (age >= CACHE_MS && age < STALE_MS) void next().catch(() => undefined);
    const r = age < STALE_MS ? cache! : await next();
    // A large render goes compressed to a scraper that accepts it (Prometheus does): compressed once per render, off
    // the event loop, a tenth of the bytes to every scraper meanwhile.
    if (r.large && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      r.gzip ??= gzipAsync(r.text);
      reply.header('content-encoding', 'gzip').header('vary', 'accept-encoding');
      return reply.send(await r.gzip);
    }
    return reply.send(r.text);
  });
}

/**
 * The registry's text, as `registry.metrics()` renders it, one metric at a time with the event loop free between
 * them, and a metric read from elsewhere (counterFrom, gaugeFrom) SLICE series at a time. Why: at 1,000 VIPs × 8
 * members the whole render takes about 70 ms of the thread, most of it in five metrics of 8,000 series each, and
 * every request that came meanwhile (a health check, a change) waited for the piece in progress.
 */
async function renderYielding(registry: Registry): Promise<string> {
  const parts: string[] = [];
  const yieldNow = () => new Promise((r) => setImmediate(r));
  for (const m of registry.getMetricsAsArray()) {
    const read = readMetrics.get(m);
    if (read) parts.push(await renderRead(m.name, read, yieldNow));
    else parts.push(await registry.getSingleMetricAsString(m.name));
    await yieldNow();
  }
  return `${parts.join('\n\n')}\n`;
}

/** Series of a metric read from elsewhere rendered between two turns of the event loop. */
const SLICE = 1000;

/** What counterFrom and gaugeFrom made, to render without prom-client's collect (see renderYielding). */
interface ReadMetric {
  type: 'counter' | 'gauge';
  help: string;
  unlabelled: boolean;
  read: Read<string>;
}
const readMetrics = new WeakMap<object, ReadMetric>();

const escapeText = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (s: string) => escapeText(s).replace(/"/g, '\\"');

/**
 * The text prom-client would render for the metric: a counter's values with the same labels summed (as its inc
 * does), a gauge's last one kept (as set does), a counter's zero left out unless it has no labels, non-finite values
 * dropped (as refill does).
 */
async function renderRead(name: string, m: ReadMetric, yieldNow: () => Promise<unknown>): Promise<string> {
  const series = new Map<string, number>();
  let n = 0;
  for (const [labels, v] of m.read()) {
    if (++n % SLICE === 0) await yieldNow();
    if (!Number.isFinite(v) || (m.type === 'counter' && v <= 0)) continue;
    const key = labelText(labels);
    series.set(key, m.type === 'counter' ? (series.get(key) ?? 0) + v : v);
  }
  if (m.unlabelled && !series.has('')) series.set('', 0);
  const lines = [`# HELP ${name} ${escapeText(m.help)}`, `# TYPE ${name} ${m.type}`];
  for (const [key, v] of series) {
    lines.push(`${name}${key ? `{${key}}` : ''} ${v}`);
    if (++n % SLICE === 0) await yieldNow();
  }
  return lines.join('\n');
}

/**
 * A series' labels as the text format writes them. Why kept per labels object: a reader that hands out the same
 * object for a series every scrape (the SLB's members) has its labels escaped and joined once, not 40,000 times a
 * scrape; a reader that builds new objects loses nothing.
 */
const labelTexts = new WeakMap<object, string>();
function labelText(labels: Partial<Record<string, string>>): string {
  let text = labelTexts.get(labels);
  if (text === undefined) {
    text = Object.entries(labels)
      .filter(([, x]) => x !== undefined)
      .map(([k, x]) => `${k}="${escapeLabel(String(x))}"`)
      .join(',');
    labelTexts.set(labels, text);
  }
  return text;
}

/** A render of the registry, and its gzip (made with a large render, or once a scraper asked for it). */
interface Rendered {
  text: Buffer;
  at: number;
  large: boolean;
  gzip: Promise<Buffer> | null;
}

const gzipAsync = promisify(gzip);

type Read<L extends string> = () => [Partial<Record<L, string>>, number][];

/** A counter whose value is read from elsewhere at scrape time (a kernel counter, a metric kept by its owner). */
export function counterFrom<L extends string>(registry: Registry, name: string, help: string, labelNames: L[], read: Read<L>): Counter<L> {
  const c = new Counter<L>({ name, help, labelNames, registers: [registry], collect: refill(read, (m, l, v) => v > 0 && (m as Counter<L>).inc(l, v)) });
  readMetrics.set(c, { type: 'counter', help, unlabelled: labelNames.length === 0, read });
  return c;
}

/** A gauge whose value is read at scrape time. */
export function gaugeFrom<L extends string>(registry: Registry, name: string, help: string, labelNames: L[], read: Read<L>): Gauge<L> {
  const g = new Gauge<L>({ name, help, labelNames, registers: [registry], collect: refill(read, (m, l, v) => (m as Gauge<L>).set(l, v)) });
  readMetrics.set(g, { type: 'gauge', help, unlabelled: labelNames.length === 0, read });
  return g;
}

/** A collect() that empties the metric and puts in what `read` gives now. */
function refill<L extends string>(read: Read<L>, put: (m: Counter<L> | Gauge<L>, labels: Partial<Record<L, string>>, v: number) => unknown) {
  return function (this: Counter<L> | Gauge<L>) {
    this.reset();
    for (const [labels, v] of read()) if (Number.isFinite(v)) put(this, labels, v);
  };
}
