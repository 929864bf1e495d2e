#!/usr/bin/env node
// fwlb node agent entry point: `fwlb run|doctor|check-config`; the only place that listens and touches process.
import { join } from 'node:path';
import { validateBalancerConfig, ResolvedBalancerConfig } from '@fwlb/config';
import { NetlinkElements, nftCli } from '@fwlb/nft';
import { Rtnl } from '@fwlb/routing';
import { conntrackAlarm, conntrackUse } from '@fwlb/conntrack';
import { FirewallHealth } from './firewall-health';
import { Reloader } from './reload';
import { build } from './app';
import { doctor, formatChecks } from './doctor';
import { Reconciler } from './reconciler';
import { Membership } from './membership';
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

async function run(path: string): Promise<void> {
  const config = loadConfig(path);
  const lock = await acquireInstanceLock(`fwlb balancer (table inet fwlb)`);
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
  const logger = nodeLogger('fwlb', config.name);
  const log = logLines(logger);
  // The admin state an operator set before the restart (a firewall out for maintenance stays out), read before
  // anything touches the kernel: a bad file stops the start here, with the kernel as it was.
  const saved = config.stateFile
    ? loadAdminState(
        config.stateFile,
        config.firewalls.map((f) => f.id),
      )
    : null;
  const rtnl = Rtnl.open();
  // The composition root: this node's firewalls' state is one Membership, written by the admin state here, the
  // health checks and the session layer, and read by the reconciler, which turns it into the kernel's state.
  const membership = new Membership(config, config.sessionTable !== null);
  // Pins are written over nfnetlink: nft would parse each of them, and a change can pin hundreds of thousands.
  const reconciler = new Reconciler(config, { ...nftCli(), elements: new NetlinkElements() }, rtnl, Date.now, membership);
  if (saved) {
    for (const [id, enabled] of Object.entries(saved.admin)) membership.setAdmin(id, enabled);
    if (saved.unknown.length) log(`state file names firewalls no longer configured, ignored: ${saved.unknown.join(', ')}`);
  }
  let runner: BoundedRunner | null = null;
  const trigger = () => runner?.trigger();
  // Layer 3: the sessions Redis knows are loaded before the first reconcile, so their pins are in it.
  // The shared admin state (with a session table) wins over the state file; what it applies is saved there too.
  const saveAdmin = config.stateFile ? (a: Record<string, boolean>) => saveAdminState(config.stateFile!, a) : undefined;
  const sessions = await SessionLayer.start({
    config,
    reconciler,
    membership,
    trigger,
    log,
    onAdmin: (a) => {
      try {
        saveAdmin?.(a);
      } catch (e) {
        log(`ALARM state file not written: ${(e as Error).message}`);
      }
    },
  });
  // Adopt: the first reconcile reads the kernel before writing and applies only the difference; nothing is flushed.
  const first = await reconciler.reconcile();
  log(`adopted kernel state: ${first.nftCommands} nft commands, ${first.routingChanges} routing changes, table handle ${first.tableHandle}`, {
    event: 'adopt',
    nftCommands: first.nftCommands,
    routingChanges: first.routingChanges,
  });
  for (const e of first.routingErrors) log(`routing: ${e}`);
  runner = BoundedRunner.create(
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
    },
    { resyncMs: config.resyncSeconds * 1000 },
    (e) => log(`reconcile failed, will retry: ${(e as Error).message}`),
  );
  // The SLB tier in this process (inside node): its VIPs are served on this node's API.
  // An SLB that cannot start (a corrupt state file, a kernel feature missing) must not take the balancer down with it:
  // the balancer runs, the SLB's kernel state stays as it was, and the alarm says why.
  let slbAlarm: string | null = null;
  const slb = config.slb
    ? await startSlb(config.slb, log).catch((e) => {
        slbAlarm = `the embedded SLB did not start; its kernel state is left as it was: ${(e as Error).message}`;
        log(`ALARM ${slbAlarm}`);
        return null;
      })
    : null;
  // BGP: announced only now that the kernel forwards as configured (the first reconcile is in).
  const announcer = config.bgp
    ? new Announcer(config.bgp, config.name, { rtnl, daemon: birdPort(config.bgp.controlSocket), unfitReason: () => membership.unfitReason(), log })
    : null;
  await announcer?.start();
  let health: FirewallHealth | null = null;
  // What a reload may change is read from the reconciler's config, the one in force.
  const conntrackFull = () => conntrackAlarm(conntrackUse(), reconciler.config.conntrackAlarmRatio);
  const reloader = new Reloader({
    membership,
    reconciler,
    health: () => health,
    sessions,
    load: () => loadConfig(path),
    log,
  });
  const reload = async (why: string) => {
    const r = await reloader.reload(why);
    runner?.setResyncMs(reconciler.config.resyncSeconds * 1000);
    return r;
  };
  const alarms = () => [
    ...(health?.alarms() ?? []),
    ...(sessions?.alarms() ?? []),
    ...(slb?.service.alarms() ?? []),
    ...(slbAlarm ? [slbAlarm] : []),
    ...(announcer?.alarms() ?? []),
    ...[conntrackFull()].filter((a): a is string => a !== null),
  ];
  const app = build({
    membership,
    reconciler,
    token: tokenOf(config.api),
    https: httpsOf(config.api),
    apply: () => reconciler.reconcile(),
    sessions: sessions?.view,
    announcer: announcer ?? undefined,
    newConnections: async () => {
      await reconciler.reconcile();
      const c = reconciler.ruleCounters();
      return c.hashedSyn?.packets ?? 0;
    },
    saveAdmin,
    shareAdmin: sessions ? (id, enabled, at) => sessions.shareAdmin(id, enabled, at) : undefined,
    reload: () => reload('API'),
    alarms,
    extraErrorCodes: slb ? Object.values(SlbErrors).map((e) => e.code) : [],
    logger,
  });
  if (slb) registerSlbRoutes(app, slb.service, tokenOf(config.api));
  const registry = newRegistry();
  const metrics = balancerMetrics(registry, {
    reconciler,
    sync: sessions ? () => sessions.view.metrics() : undefined,
    alarms,
    helperUp: config.health ? () => health?.helperUp() ?? false : undefined,
    announcer: announcer ?? undefined,
  });
  if (slb) slbMetrics(registry, slb.service);
  metricsRoute(app, registry);
  const listen = config.api.listen;
  await listenOn(app, listen);
  runner.start();
  health = FirewallHealth.start(config, membership, {
    trigger,
    log,
    onView: (view) => sessions?.publishHealth(view),
    onResult: (fw, res) => metrics.observeCheck(fw, res),
  });
  log(`listening on ${listen}`);
  // SIGHUP re-reads the config file (systemctl reload): a refused one is logged, and the node keeps its config.
  process.on('SIGHUP', () => void reload('SIGHUP').catch(() => undefined));
  stopOnSignals([
    () => lock.release(),
    () => runner?.stop(),
    () => announcer?.stop(),
    () => health?.stop(),
    () => sessions?.stop(),
    () => slb?.stop(),
    () => app.close(),
    () => rtnl.close(),
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
