#!/usr/bin/env node
// fwlb-slb entry point: `fwlb-slb run|doctor|check-config|export`; the only place that listens and touches process.
import { join } from 'node:path';
import { httpsOf, listenOn, logLines, metricsRoute, newRegistry, nodeCli, nodeLogger, stopOnSignals, tokenOf } from '@fwlb/service';
import { buildSlbApp, exportConfig, loadSlbConfigWithState, slbDoctor, SlbKernelError, slbMetrics, startSlb, vipSources } from '@fwlb/slb';

async function run(path: string): Promise<void> {
  const config = loadSlbConfigWithState(path);
  const logger = nodeLogger('fwlb-slb', config.name);
  const log = logLines(logger);
  let slb;
  try {
    slb = await startSlb(config, log);
  } catch (e) {
    if (!(e instanceof SlbKernelError)) throw e;
    console.error(`fwlb-slb: ${e.message}`);
    process.exit(3);
  }
  const running = slb;
  const app = buildSlbApp({ service: slb.service, token: tokenOf(slb.config.api), logger, https: httpsOf(slb.config.api), reload: () => running.reload(path) });
  const registry = newRegistry();
  const members = slbMetrics(registry, slb.service);
  metricsRoute(app, registry, members.walk);
  await listenOn(app, slb.config.api.listen);
  log(`listening on ${slb.config.api.listen}`);
  // SIGHUP re-reads the config file (systemctl reload fwlb-slb): a refused one is logged, and the SLB keeps its config.
  process.on('SIGHUP', () => void running.reload(path).catch(() => undefined));
  stopOnSignals([() => slb.stop(), () => app.close()]);
}

nodeCli({
  packageDir: join(__dirname, '..'),
  prog: 'fwlb-slb',
  usage:
    'fwlb-slb run --config FILE | fwlb-slb doctor [--config FILE] | fwlb-slb check-config FILE | fwlb-slb export --config FILE | fwlb-slb token create FILE [--force] | fwlb-slb --version',
  // The config with the state file: check-config validates both together, and says where each VIP runs from.
  loadConfig: (path) => {
    const c = loadSlbConfigWithState(path);
    if (process.argv[2] === 'check-config') for (const o of vipSources(c).origins) console.log(`VIP ${o.id}: ${o.why}`);
    return c;
  },
  run,
  doctor: (c) => slbDoctor(c?.interface, c?.haproxy.binary, !!c?.vips.some((v) => v.address.includes(':')), !!c?.vips.some((v) => v.scheduler === 'flow')),
  commands: {
    export: async (c) => void process.stdout.write(exportConfig(c)),
  },
});
