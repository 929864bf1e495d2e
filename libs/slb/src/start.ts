// Starts the SLB tier in this process: state file, kernel checks, the service with its monitors and runner; shell
// layer of libs/slb, used by `fwlb-slb run` and by the inside balancer node when it embeds the SLB.
import { compileVipValidator, ConfigError, ResolvedSlbConfig, validateSlbConfig, VipConfig } from '@fwlb/config';
import { ContentMatcher, helperAlarms, ProbeHelper } from '@fwlb/health';
import { NFT_TIMEOUT_MS, nftCli } from '@fwlb/nft';
import { Rtnl, watchRouting } from '@fwlb/routing';
import { acquireInstanceLock, BoundedRunner, cpuMs, formatChecks, loadJsonConfig, periodForShare, readStateFile, writeFileAtomicAsync } from '@fwlb/service';
import { HAPROXY_CHECK, slbDoctor } from './doctor';
import { memberMonitors } from './member-health';
import { HaproxyEngine } from './haproxy';
import { localServices } from './local-services';
import { SlbReconcileResult, SlbService } from './service';
import { BACKGROUND_CPU_SHARE, LARGE_VIPS } from './passes';
import { nftSlbKernel } from './kernel-port';
import { fileDigests, mergeVips, parseState, stateFileDigests, vipDigest, VipOrigin } from './vip-source';

export const loadSlbConfig = (path: string): ResolvedSlbConfig => loadJsonConfig(path, validateSlbConfig);

export interface VipSources {
  /** The config file as written, and its own VIPs. */
  raw: Record<string, unknown>;
  fileVips: VipConfig[];
  /** The VIPs that run, as written (in the file or through the API). */
  running: VipConfig[];
  origins: VipOrigin[];
}

/** Where a loaded config's VIPs came from (see mergeVips). */
const sources = new WeakMap<ResolvedSlbConfig, VipSources>();

/** The config file's VIPs and where each running one comes from, for a config loadSlbConfigWithState returned. */
export function vipSources(config: ResolvedSlbConfig): VipSources {
  const vips = config.vips as unknown as VipConfig[];
  return sources.get(config) ?? { raw: {}, fileVips: vips, running: vips, origins: [] };
}

/** `fwlb-slb export`: the config file with the VIPs that run in place of its own, to fold the API's changes back in. */
export function exportConfig(config: ResolvedSlbConfig): string {
  const s = vipSources(config);
  return `${JSON.stringify({ ...s.raw, vips: s.running }, null, 2)}\n`;
}

/**
 * The config with its VIPs as the lifecycle's rule says (mergeVips: a VIP runs as the last of the config file and
 * the API to change it), validated once: the rest of the config first (cheap, errors name the config file), then the
 * VIPs that will run (errors name the state file when there is one). An empty, truncated or invalid state file is a
 * ConfigError naming the file (nothing has touched the kernel yet). Validating 1,000 VIPs costs about 0.1 s, so a
 * start does it once, not for both lists.
 */
export function loadSlbConfigWithState(path: string): ResolvedSlbConfig {
  let src: VipSources = { raw: {}, fileVips: [], running: [], origins: [] };
  const config = loadJsonConfig(path, (doc, source) => {
    const raw = (doc && typeof doc === 'object' ? doc : {}) as { stateFile?: unknown; vips?: unknown };
    const base = validateSlbConfig({ ...raw, vips: [] }, source);
    const fileVips = Array.isArray(raw.vips) ? (raw.vips as VipConfig[]) : [];
    src = { raw, fileVips, running: fileVips, origins: [] };
    const stateDoc = base.stateFile ? readStateFile(base.stateFile) : undefined;
    if (stateDoc === undefined) return validateSlbConfig(doc, source);
    const state = parseState(stateDoc, fileVips);
    if (!state) throw new ConfigError([{ field: '', message: 'is not an SLB state file: {"file": {...}, "vips": [...]} or a list of VIPs' }], base.stateFile!);
    const merged = mergeVips(fileVips, state);
    src = { raw, fileVips, running: merged.vips, origins: merged.origins };
    return validateSlbConfig({ ...raw, vips: merged.vips }, base.stateFile!);
  });
  sources.set(config, src);
  return config;
}

/**
 * The SLB state file: the VIPs as the API left them, one per line, and the config file's digest of each (what the
 * API's changes were made against), written atomically off the event loop (see writeFileAtomicAsync). Each VIP's
 * text is kept for as long as the VIP is: a change serializes the VIPs it made.
 */
export function saver(path: string, fileVips: readonly VipConfig[] | (() => readonly VipConfig[]) = []) {
  const file = typeof fileVips === 'function' ? fileVips : () => fileVips;
  const texts = new WeakMap<object, string>();
  const text = (v: VipConfig) => {
    let s = texts.get(v);
    if (s === undefined) texts.set(v, (s = JSON.stringify(v)));
    return s;
  };
  // The config file's digests, kept while its VIPs are the same list (until a reload): a digest per VIP per save was
  // a quarter of a member change's CPU at 1,000 VIPs.
  let digested: { of: readonly VipConfig[]; digests: Record<string, string | null> } | null = null;
  const fileDigestsNow = () => {
    const f = file();
    if (digested?.of !== f) digested = { of: f, digests: fileDigests(f) };
    return digested.digests;
  };
  return (vips: readonly VipConfig[]) =>
    writeFileAtomicAsync(
      path,
      `{\n"file": ${JSON.stringify(stateFileDigests(fileDigestsNow(), vips))},\n"vips": ${vips.length ? `[\n${vips.map(text).join(',\n')}\n]` : '[]'}\n}\n`,
    );
}

/** Counter elements beyond which a read stretches its own period (see counterLoop). */
export const LARGE_COUNTERS = 4000;

export class SlbKernelError extends Error {
  readonly code = 'FWLB_KERNEL_MISSING';
}

export interface SlbReloadResult {
  /** VIPs whose definition the reload changed (added, edited or removed). */
  changed: string[];
}

export interface RunningSlb {
  config: ResolvedSlbConfig;
  service: SlbService;
  /**
   * Re-read the config file (SIGHUP, POST /reload): its VIPs by the lifecycle's rule (a VIP the file changed since
   * the version in force takes the file's; the others keep what the API made of them), in one change; any other
   * key that differs is refused as taking a restart, and a refusal changes nothing.
   */
  reload(path: string): Promise<SlbReloadResult>;
  /** The first adoption of the kernel state (null if it failed; the runner retries). */
  adopted: Promise<SlbReconcileResult | null>;
  stop(): void;
}

type SlbLog = (m: string, fields?: Record<string, unknown>) => void;

/** Adopts the kernel state (first reconcile reads before it writes), then keeps it in step with health and the API. */
export async function startSlb(from: string | ResolvedSlbConfig, log: SlbLog): Promise<RunningSlb> {
  const config = typeof from === 'string' ? loadSlbConfigWithState(from) : from;
  // Where a VIP runs from when the API's version and the config file's differ: said at every start, never silent.
  for (const o of vipSources(config).origins) log(`VIP ${o.id}: ${o.why}`, { event: 'vip-source', vip: o.id, from: o.from });
  const lock = await acquireInstanceLock(`fwlb SLB (table ip ${config.table})`);
  // The config file's VIPs in force: what the state file's digests record (a reload replaces them).
  const fileVips = { vips: vipSources(config).fileVips };
  const checks = await preflight(config);
  const rtnl = Rtnl.open();
  const helper = ProbeHelper.start(undefined, undefined, {
    onStatus: (s) => log(s.up ? `probe helper up (${s.restarts} restarts)` : `ALARM probe helper down: ${s.lastError}; member health holds its last state`),
  });
  // Content regexes run in a worker thread under the node's budget, never on this thread (the API, the reconciler).
  const content = new ContentMatcher({ regexMsPerSecond: config.checkBudget.regexMsPerSecond, log });
  let runner: BoundedRunner | null = null;
  const l7 = l7Engine(config, checks, log);
  const service = new SlbService(config, {
    // A VIP's change is a small transaction: one long-lived nft takes them (see NftSession); start and reads spawn.
    kernel: nftSlbKernel(nftCli('nft', NFT_TIMEOUT_MS, { session: true }), config.table),
    addresses: rtnl,
    monitors: memberMonitors(helper, (r) => service.countCheck(r), content),
    save: config.stateFile ? saver(config.stateFile, () => fileVips.vips) : undefined,
    trigger: () => runner?.trigger(),
    log,
    alarms: () => [...helperAlarms(helper), ...content.alarms()],
    l7,
    local: localServices,
    helperUp: () => helper.status().up,
  });
  // A VIP in the config that would capture one of this node's services: refused before anything touches the kernel.
  try {
    await service.refuseCaptures(config.vips, (_, i) => `/vips/${i}/address`, typeof from === 'string' ? from : 'config');
  } catch (e) {
    helper.close();
    content.close();
    rtnl.close();
    lock.release();
    throw e;
  }
  runner = reconcileRunner(service, config, log);
  const adopted = adopt(service, log, () => runner?.trigger());
  runner.start();
  const watch = watchVipAddresses(service, () => runner?.trigger(), log);
  const counters = counterLoop(service, config, log);
  const reloader = new SlbReloader(config, service, fileVips, log);
  return {
    config,
    service,
    adopted,
    reload: (path) => reloader.reload(path),
    stop() {
      lock.release();
      counters.stop();
      runner?.stop();
      watch.close();
      service.stop();
      l7?.stop();
      helper.close();
      content.close();
      rtnl.close();
    },
  };
}

/**
 * A VIP's address lost with its interface (IPv6 addresses go when a link goes down) or deleted by hand comes back at
 * once, not at the next full pass.
 */
function watchVipAddresses(service: SlbService, trigger: () => void, log: SlbLog) {
  return watchRouting(
    (e) => {
      if ((e.kind === 'link' && service.addressesChanged()) || (e.kind === 'address' && service.addressesChanged(e.address))) trigger();
    },
    (e) => {
      log(`address notices lost (${e.message}): checking everything`);
      if (service.addressesChanged()) trigger();
    },
    { routes: false, addresses: true },
  );
}

/** The reconcile loop: health changes soon (at most every 50 ms), a full pass every `resyncSeconds`. */
function reconcileRunner(service: SlbService, config: ResolvedSlbConfig, log: SlbLog): BoundedRunner {
  return BoundedRunner.create(
    async () => {
      const r = await service.tick();
      if (r.nftCommands || r.addressesAdded.length || r.addressesRemoved.length)
        log(`SLB reconciled: ${r.nftCommands} nft commands, addresses +${r.addressesAdded.length} -${r.addressesRemoved.length}`, {
          event: 'reconcile',
          nftCommands: r.nftCommands,
          addressesAdded: r.addressesAdded,
          addressesRemoved: r.addressesRemoved,
        });
    },
    { resyncMs: config.resyncSeconds * 1000, minIntervalMs: 50 },
    (e) => log(`SLB reconcile failed, will retry: ${(e as Error).message}`),
  );
}

/**
 * Counters every `countersSeconds`; with a large table (over LARGE_VIPS VIPs or LARGE_COUNTERS elements), less often if it
 * must, so that reading counters takes at most BACKGROUND_CPU_SHARE of a core (its own CPU and its nft listings'). By
 * size, not by time: a small table on a busy machine keeps its period (the lab's tests wait for fresh counters).
 */
function counterLoop(service: SlbService, config: ResolvedSlbConfig, log: SlbLog): { stop(): void } {
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const every = config.countersSeconds * 1000;
  const next = (delay: number) => {
    timer = setTimeout(async () => {
      const cpu0 = cpuMs();
      await service.refreshCounters().catch((e) => log(`SLB counters not read: ${(e as Error).message}`));
      const large = service.vips().length > LARGE_VIPS || service.counterElements() > LARGE_COUNTERS;
      if (!stopped) next(large ? periodForShare(every, cpuMs() - cpu0, BACKGROUND_CPU_SHARE) : every);
    }, delay);
    timer.unref();
  };
  next(every);
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}

/**
 * Reloads of the config file, one at a time: its VIPs by the lifecycle's rule, in one change; any other key that
 * differs is refused as taking a restart, and a refusal changes nothing. `fileVips` is what the state file's digests
 * record as the config file's VIPs in force; a reload replaces it.
 */
class SlbReloader {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly config: ResolvedSlbConfig,
    private readonly service: SlbService,
    private readonly fileVips: { vips: VipConfig[] },
    private readonly log: SlbLog,
  ) {}

  reload(path: string): Promise<SlbReloadResult> {
    const r = this.queue.then(() => this.reloadNow(path));
    this.queue = r.catch(() => undefined);
    return r.then(
      (res) => {
        this.log(`reloaded ${path}: ${res.changed.length ? `VIPs changed ${res.changed.join(', ')}` : 'no VIP changed'}`, { event: 'reload', ...res });
        return res;
      },
      (e) => {
        this.log(`reload of ${path} refused, the running config stays: ${(e as Error).message}`, { event: 'reload-refused' });
        throw e;
      },
    );
  }

  private async reloadNow(path: string): Promise<SlbReloadResult> {
    const { config, service } = this;
    const { next, newFileVips, origins } = loadJsonConfig(path, (doc, source) => {
      const raw = (doc && typeof doc === 'object' ? doc : {}) as Record<string, unknown>;
      const nfv = Array.isArray(raw.vips) ? (raw.vips as VipConfig[]) : [];
      const live = service.liveVips();
      const merged = mergeVips(nfv, { vips: [...live], file: stateFileDigests(fileDigests(this.fileVips.vips), live) });
      return { next: validateSlbConfig({ ...raw, vips: merged.vips }, source), newFileVips: nfv, origins: merged.origins };
    });
    const problems = [...new Set([...Object.keys(config), ...Object.keys(next)])]
      .filter((k) => k !== 'vips' && JSON.stringify(config[k as keyof ResolvedSlbConfig]) !== JSON.stringify(next[k as keyof ResolvedSlbConfig]))
      .map((k) => ({ field: `/${k}`, message: 'takes a restart, not a reload' }));
    if (problems.length) throw new ConfigError(problems, path);
    const digests = (vs: readonly VipConfig[]) => new Map(vs.map((v) => [v.id, vipDigest(v)]));
    const before = digests(service.liveVips());
    const after = digests(next.vips as unknown as VipConfig[]);
    const changed = [...new Set([...before.keys(), ...after.keys()])].filter((id) => before.get(id) !== after.get(id));
    if (changed.length) await service.replaceAll(next.vips);
    this.fileVips.vips = newFileVips;
    await service.save();
    for (const o of origins) this.log(`VIP ${o.id}: ${o.why}`, { event: 'vip-source', vip: o.id, from: o.from });
    return { changed };
  }
}

/** What this kernel and host offer the SLB; throws when something required is missing (nothing is touched yet). */
async function preflight(config: ResolvedSlbConfig): Promise<Awaited<ReturnType<typeof slbDoctor>>> {
  const checks = await slbDoctor(
    config.interface,
    config.haproxy.binary,
    config.vips.some((v) => v.address.includes(':')),
    config.vips.some((v) => v.scheduler === 'flow'),
  );
  const missing = checks.filter((c) => c.required && !c.ok);
  if (missing.length) throw new SlbKernelError(`this kernel lacks what the SLB needs:\n${formatChecks(missing)}`);
  return checks;
}

/**
 * Adoption runs behind the API: reads answer (and /health says `starting`) while the kernel is read; changes queue
 * behind it. If it fails, the kernel keeps what it has and the runner tries again (`retry`).
 */
function adopt(service: SlbService, log: SlbLog, retry: () => void): Promise<SlbReconcileResult | null> {
  return service.start().then(
    (first) => {
      compileVipValidator();
      log(
        `SLB adopted kernel state: ${first.nftCommands} nft commands, ${first.addressesAdded.length} addresses added, ${first.addressesRemoved.length} removed, table handle ${first.tableHandle}`,
      );
      return first;
    },
    (e) => {
      log(`ALARM SLB could not adopt the kernel state, will retry: ${(e as Error).message}`);
      retry();
      return null;
    },
  );
}

/** HAProxy serves the L7 and proxied TCP VIPs; without it they are refused and the L4 ones work as before. */
function l7Engine(config: ResolvedSlbConfig, checks: Awaited<ReturnType<typeof slbDoctor>>, log: SlbLog): HaproxyEngine | undefined {
  if (checks.find((c) => c.name === HAPROXY_CHECK)?.ok)
    return new HaproxyEngine({ paths: { dir: config.haproxy.dir, peers: config.haproxy.peers, localPeer: config.name }, binary: config.haproxy.binary, log });
  log(`HAProxy (${config.haproxy.binary}) not found: VIPs with mode "http" or "tcp" are refused`);
  return undefined;
}
