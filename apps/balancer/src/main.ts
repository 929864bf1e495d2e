#!/usr/bin/env node
// fwlb node agent entry point: `fwlb run|doctor|check-config`; the only place that listens and touches process.
import { join } from 'node:path';
import { validateBalancerConfig, ResolvedBalancerConfig } from '@fwlb/config';
import { NetlinkElements, nftCli } from '@fwlb/nft';
import { Rtnl, watchRouting } from '@fwlb/routing';
import { conntrackAlarm, conntrackUse } from '@fwlb/conntrack';
import { FirewallHealth } from './firewall-health';
import { Reloader } from './reload';
import { build } from './app';
import { doctor, formatChecks } from './doctor';
import { Reconciler } from './reconciler';
import { Membership } from './membership';
import { FirewallHistory, HISTORY_SAMPLE_MS } from './history';
import { steersIPv6 } from './rules';
import { loadAdminState, saveAdminState } from './admin-state';
import { SessionLayer } from './session-layer';
import { registerSlbRoutes, SlbErrors, slbMetrics, startSlb } from '@fwlb/slb';
import {
  acquireInstanceLock,
  BoundedRunner,
  httpsOf,
  listenOn,
  loadJsonConfig,
  logLines,
  metricsRoute,
  newRegistry,
  nodeCli,
  nodeLogger,
  stopOnSignals,
  tokenOf,
} from '@fwlb/service';
import { balancerMetrics } from './metrics';
import { Announcer, birdPort, setAnnounced } from './announcer';
import type { AnnounceState } from '@fwlb/routing';

const loadConfig = (path: string): ResolvedBalancerConfig => loadJsonConfig(path, validateBalancerConfig);

/** The kernel features fwlb needs for this config, checked before anything is touched: exit 3 with what is missing. */
async function preflight(config: ResolvedBalancerConfig): Promise<void> {
  const checks = await doctor({
    interfaces: [config.sideInterface, ...config.firewalls.map((f) => f.interface)],
    health: config.health !== null,
    conntrackAlarmRatio: config.conntrackAlarmRatio,
    siblings: config.sessionTable !== null,
    ipv6: steersIPv6(config),
    handshakeTimeoutSeconds: config.handshakeTimeoutSeconds,
  });
  const missing = checks.filter((c) => c.required && !c.ok);
  if (missing.length) {
    console.error(`fwlb: this kernel lacks what fwlb needs:\n${formatChecks(missing)}`);
    process.exit(3);
  }
}

/**
 * Adopt, then keep reconciling: the first reconcile reads the kernel before writing and applies only the
 * difference (nothing is flushed); later ones run when triggered, and at least every resync period.
 */
async function adoptThenRun(reconciler: Reconciler, config: ResolvedBalancerConfig, log: Log, history: FirewallHistory): Promise<BoundedRunner> {
  const first = await reconciler.reconcile();
  history.observe(Date.now(), reconciler.firewalls());
  log(`adopted kernel state: ${first.nftCommands} nft commands, ${first.routingChanges} routing changes, table handle ${first.tableHandle}`, {
    event: 'adopt',
    nftCommands: first.nftCommands,
    routingChanges: first.routingChanges,
  });
  for (const e of first.routingErrors) log(`routing: ${e}`);
  return BoundedRunner.create(
    async () => {
      const r = await reconciler.reconcile();
      if (r.nftCommands || r.routingChanges || r.pinChanges)
        log(`reconciled: ${r.nftCommands} nft commands, ${r.pinChanges} pins written, ${r.routingChanges} routing changes`, {
          event: 'reconcile',
          nftCommands: r.nftCommands,
          pinChanges: r.pinChanges,
          routingChanges: r.routingChanges,
          ms: r.ms,
        });
      for (const e of r.routingErrors) log(`routing: ${e}`);
      // Every change of a firewall's state is followed by a pass: what the pass committed is its history.
      history.observe(Date.now(), reconciler.firewalls());
    },
    { resyncMs: config.resyncSeconds * 1000 },
    (e) => log(`reconcile failed, will retry: ${(e as Error).message}`),
  );
}

/**
 * Routes lost with a link (taken down and up again) or removed by hand come back at once, not at the next resync:
 * the marked health probes need them too, so a firewall would otherwise stay down until then.
 */
function watchOwnRouting(reconciler: Reconciler, trigger: () => void, log: Log) {
  return watchRouting(
    (e) => reconciler.routingChanged(e) && trigger(),
    (e) => {
      log(`routing notices lost (${e.message}): checking everything`);
      trigger();
    },
  );
}

/**
 * The firewalls' traffic for the history, every HISTORY_SAMPLE_MS: the kernel's counters from a listing of the
 * table no older than that (a pass or a scrape may have made one), timed by when that listing began.
 */
function sampleTraffic(reconciler: Reconciler, history: FirewallHistory): NodeJS.Timeout {
  const timer = setInterval(() => {
    reconciler
      .freshCounters(HISTORY_SAMPLE_MS)
      .then(() => {
        const at = reconciler.countersAt();
        if (at !== null) history.sample(at, reconciler.firewalls());
      })
      .catch(() => undefined);
  }, HISTORY_SAMPLE_MS);
  timer.unref();
  return timer;
}

/**
 * The SLB tier in this process (inside node): its VIPs are served on this node's API. An SLB that cannot start (a
 * corrupt state file, a kernel feature missing) must not take the balancer down with it: the balancer runs, the
 * SLB's kernel state stays as it was, and the alarm says why.
 */
async function embeddedSlb(config: ResolvedBalancerConfig, log: Log): Promise<{ slb: Awaited<ReturnType<typeof startSlb>> | null; alarm: string | null }> {
  if (!config.slb) return { slb: null, alarm: null };
  try {
    return { slb: await startSlb(config.slb, log), alarm: null };
  } catch (e) {
    const alarm = `the embedded SLB did not start; its kernel state is left as it was: ${(e as Error).message}`;
    log(`ALARM ${alarm}`);
    return { slb: null, alarm };
  }
}

type Log = ReturnType<typeof logLines>;

/**
 * Where admin changes are saved (the state file, if configured): `saveAdmin` for the API's own changes (a failure is
 * the request's), `onAdmin` for those the shared table brings (a failure is an alarm in the log).
 */
function adminSaver(config: ResolvedBalancerConfig, log: Log) {
  const saveAdmin = config.stateFile ? (a: Record<string, boolean>) => saveAdminState(config.stateFile!, a) : undefined;
  const onAdmin = (a: Record<string, boolean>) => {
    try {
      saveAdmin?.(a);
    } catch (e) {
      log(`ALARM state file not written: ${(e as Error).message}`);
    }
  };
  return { saveAdmin, onAdmin };
}

/** Every condition an operator must see, from each part of the node. */
function alarmsOf(p: {
  health: FirewallHealth | null;
  sessions: SessionLayer | null;
  slb: Awaited<ReturnType<typeof startSlb>> | null;
  slbAlarm: string | null;
  announcer: Announcer | null;
  reconciler: Reconciler;
}): string[] {
  // The conntrack table's fill is read against the ratio of the config in force (a reload may change it).
  const conntrackFull = conntrackAlarm(conntrackUse(), p.reconciler.config.conntrackAlarmRatio);
  return [
    ...(p.health?.alarms() ?? []),
    ...(p.sessions?.alarms() ?? []),
    ...(p.slb?.service.alarms() ?? []),
    ...(p.slbAlarm ? [p.slbAlarm] : []),
    ...(p.announcer?.alarms() ?? []),
    ...(conntrackFull !== null ? [conntrackFull] : []),
  ];
}

/** The node's API (with the embedded SLB's routes) and its metrics, listening. */
async function serve(n: {
  config: ResolvedBalancerConfig;
  membership: Membership;
  reconciler: Reconciler;
  sessions: SessionLayer | null;
  announcer: Announcer | null;
  slb: Awaited<ReturnType<typeof startSlb>> | null;
  saveAdmin?: (a: Record<string, boolean>) => void;
  reload: (why: string) => ReturnType<Reloader['reload']>;
  alarms: () => string[];
  logger: ReturnType<typeof nodeLogger>;
  history: FirewallHistory;
  health: () => FirewallHealth | null;
}) {
  const { config, reconciler, sessions, slb } = n;
  const app = build({
    membership: n.membership,
    reconciler,
    history: n.history,
    token: tokenOf(config.api),
    https: httpsOf(config.api),
    apply: () => reconciler.reconcile(),
    sessions: sessions?.view,
    announcer: n.announcer ?? undefined,
    newConnections: async () => {
      await reconciler.reconcile();
      await reconciler.freshCounters(0);
      return reconciler.ruleCounters().hashedSyn?.packets ?? 0;
    },
    saveAdmin: n.saveAdmin,
    shareAdmin: sessions ? (id, enabled, at) => sessions.shareAdmin(id, enabled, at) : undefined,
    switchLead: sessions ? (id, enabled) => sessions.leadFor(reconciler.movedIf(id, enabled)) : undefined,
    reload: () => n.reload('API'),
    alarms: n.alarms,
    extraErrorCodes: slb ? Object.values(SlbErrors).map((e) => e.code) : [],
    logger: n.logger,
  });
  if (slb) registerSlbRoutes(app, slb.service, tokenOf(config.api));
  const registry = newRegistry();
  const metrics = balancerMetrics(registry, {
    reconciler,
    sync: sessions ? () => sessions.view.metrics() : undefined,
    alarms: n.alarms,
    helperUp: config.health ? () => n.health()?.helperUp() ?? false : undefined,
    announcer: n.announcer ?? undefined,
  });
  const members = slb ? slbMetrics(registry, slb.service) : null;
  // The kernel's counters as of the scrape: one terse listing of the table, shared with /status within a second.
  metricsRoute(app, registry, () => Promise.all([reconciler.freshCounters(), members?.walk()]));
  await listenOn(app, config.api.listen);
  return { app, metrics };
}

async function run(path: string): Promise<void> {
  const config = loadConfig(path);
  const lock = await acquireInstanceLock(`fwlb balancer (table inet fwlb)`);
  await preflight(config);
  const logger = nodeLogger('fwlb', config.name);
  const log = logLines(logger);
  // The admin state an operator set before the restart (a firewall out for maintenance stays out), read before
  // anything touches the kernel: a bad file stops the start here, with the kernel as it was.
  const ids = config.firewalls.map((f) => f.id);
  const saved = config.stateFile ? loadAdminState(config.stateFile, ids) : null;
  const rtnl = Rtnl.open();
  // The composition root: this node's firewalls' state is one Membership, written by the admin state here, the
  // health checks and the session layer, and read by the reconciler, which turns it into the kernel's state.
  const membership = new Membership(config, config.sessionTable !== null);
  // Pins are written over nfnetlink: nft would parse each of them, and a change can pin hundreds of thousands.
  const reconciler = new Reconciler(config, { ...nftCli(), elements: new NetlinkElements() }, rtnl, Date.now, membership);
  for (const [id, enabled] of Object.entries(saved?.admin ?? {})) membership.setAdmin(id, enabled);
  if (saved?.unknown.length) log(`state file names firewalls no longer configured, ignored: ${saved.unknown.join(', ')}`);
  let runner: BoundedRunner | null = null;
  const trigger = () => runner?.trigger();
  // Layer 3: the sessions Redis knows are loaded before the first reconcile, so their pins are in it.
  // The shared admin state (with a session table) wins over the state file; what it applies is saved there too.
  const { saveAdmin, onAdmin } = adminSaver(config, log);
  const sessions = await SessionLayer.start({ config, reconciler, membership, elements: new NetlinkElements(), trigger, log, onAdmin });
  const history = new FirewallHistory();
  runner = await adoptThenRun(reconciler, config, log, history);
  const sampler = sampleTraffic(reconciler, history);
  const { slb, alarm: slbAlarm } = await embeddedSlb(config, log);
  // BGP: announced only now that the kernel forwards as configured (the first reconcile is in).
  const announcer = config.bgp
    ? new Announcer(config.bgp, config.name, { rtnl, daemon: birdPort(config.bgp.controlSocket), unfitReason: () => membership.unfitReason(), log })
    : null;
  await announcer?.start();
  let health: FirewallHealth | null = null;
  const reloader = new Reloader({ membership, reconciler, health: () => health, sessions, load: () => loadConfig(path), log });
  const reload = async (why: string) => {
    const r = await reloader.reload(why);
    runner?.setResyncMs(reconciler.config.resyncSeconds * 1000);
    return r;
  };
  const alarms = () => alarmsOf({ health, sessions, slb, slbAlarm, announcer, reconciler });
  const parts = { config, membership, reconciler, sessions, announcer, slb, history };
  const { app, metrics } = await serve({ ...parts, saveAdmin, reload, alarms, logger, health: () => health });
  runner.start();
  const routingWatch = watchOwnRouting(reconciler, trigger, log);
  // A firewall's health event goes to the membership, then a reconcile (trigger) puts it in the kernel; the view is
  // shared with the other nodes through the session layer.
  health = FirewallHealth.start(config, membership, {
    trigger,
    log,
    onView: (view) => sessions?.publishHealth(view),
    onResult: (fw, res) => metrics.observeCheck(fw, res),
  });
  log(`listening on ${config.api.listen}`);
  // SIGHUP re-reads the config file (systemctl reload): a refused one is logged, and the node keeps its config.
  process.on('SIGHUP', () => void reload('SIGHUP').catch(() => undefined));
  // The API closes first (an admin change in flight ends: shared and applied, or refused), and the kernel keeps
  // following the shared state until the last moment: a stopping node that stopped applying first would forward on
  // an old table for as long as its close took.
  stopOnSignals([
    () => app.close(),
    () => health?.stop(),
    () => announcer?.stop(),
    () => routingWatch.close(),
    () => clearInterval(sampler),
    () => runner?.stop(),
    () => sessions?.stop(),
    () => slb?.stop(),
    () => rtnl.close(),
    () => lock.release(),
  ]);
}

nodeCli({
  packageDir: join(__dirname, '..'),
  prog: 'fwlb',
  usage:
    'fwlb run --config FILE | fwlb doctor [--config FILE] | fwlb check-config FILE | fwlb announce fit|drained|unfit|none --config FILE | fwlb token create FILE [--force] | fwlb --version',
  loadConfig,
  run,
  doctor: (c) =>
    doctor({
      interfaces: c ? [c.sideInterface, ...c.firewalls.map((f) => f.interface)] : [],
      health: c ? c.health !== null : false,
      conntrackAlarmRatio: c?.conntrackAlarmRatio,
      siblings: c ? c.sessionTable !== null : false,
      ipv6: c ? steersIPv6(c) : false,
      handshakeTimeoutSeconds: c?.handshakeTimeoutSeconds,
      bgp: c?.bgp,
    }),
  commands: { announce: announceCommand },
});

/**
 * `fwlb announce STATE --config FILE`: set the announce table by hand, without the controller. systemd's
 * `fwlb-unfit.service` runs `announce unfit` when it gives up restarting fwlb (fail static ends: the node becomes the
 * least preferred, never withdrawn); `none` withdraws every prefix (decommissioning a node).
 */
async function announceCommand(config: ResolvedBalancerConfig, args: string[]): Promise<void> {
  const state = args[0];
  if (!config.bgp) throw new Error('this config has no bgp section: nothing is announced');
  if (!['fit', 'drained', 'unfit', 'none'].includes(state)) throw new Error(`announce: the state is fit, drained, unfit or none, not ${state ?? 'missing'}`);
  const rtnl = Rtnl.open();
  try {
    const errors = await setAnnounced(rtnl, config.bgp, state === 'none' ? null : (state as AnnounceState));
    if (errors.length) throw new Error(errors.join('; '));
    console.log(`announce table ${config.bgp.announceTable}: ${state}`);
  } finally {
    rtnl.close();
  }
}
