#!/usr/bin/env node
// fwlb-slb entry point: `fwlb-slb run|doctor|check-config`; the only place that listens and touches process.
import { renameSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { ResolvedSlbConfig, validateSlbConfig, VipConfig } from '@fwlb/config';
import { ProbeHelper } from '@fwlb/health';
import { nftCli } from '@fwlb/nft';
import { Rtnl } from '@fwlb/routing';
import { BoundedRunner, formatChecks, listenOn, loadJsonConfig, nodeCli, stopOnSignals, tokenOf } from '@fwlb/service';
import { buildSlbApp } from './app';
import { slbDoctor } from './doctor';
import { memberMonitors } from './member-health';
import { SlbService } from './service';

const loadConfig = (path: string): ResolvedSlbConfig => loadJsonConfig(path, validateSlbConfig);

/** VIPs saved by the API take the place of the config file's list; they are validated the same way. */
function withState(c: ResolvedSlbConfig): ResolvedSlbConfig {
  if (!c.stateFile || !existsSync(c.stateFile)) return c;
  const vips = JSON.parse(readFileSync(c.stateFile, 'utf8')) as VipConfig[];
  return validateSlbConfig({ ...JSON.parse(JSON.stringify(c)), vips }, c.stateFile);
}

/** Write-then-rename, so a crash mid-write never leaves half a state file. */
function saver(path: string) {
  return (vips: VipConfig[]) => {
    writeFileSync(`${path}.tmp`, JSON.stringify(vips, null, 2), { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  };
}

async function run(path: string): Promise<void> {
  const config = withState(loadConfig(path));
  const missing = (await slbDoctor(config.interface)).filter((c) => c.required && !c.ok);
  if (missing.length) {
    console.error(`fwlb-slb: this kernel lacks what the SLB needs:\n${formatChecks(missing)}`);
    process.exit(3);
  }
  const log = (msg: string) => console.log(`${new Date().toISOString()} fwlb-slb[${config.name}] ${msg}`);
  const rtnl = Rtnl.open();
  const helper = ProbeHelper.start();
  let runner: BoundedRunner | null = null;
  const service = new SlbService(config, {
    nft: nftCli(),
    addresses: rtnl,
    monitors: memberMonitors(helper),
    save: config.stateFile ? saver(config.stateFile) : undefined,
    trigger: () => runner?.trigger(),
    log,
  });
  const first = await service.start();
  log(`adopted kernel state: ${first.nftCommands} nft commands, ${first.addressesAdded.length} addresses added, ${first.addressesRemoved.length} removed, table handle ${first.tableHandle}`);
  runner = BoundedRunner.create(
    async () => {
      const r = await service.reconcile();
      if (r.nftCommands || r.addressesAdded.length || r.addressesRemoved.length) log(`reconciled: ${r.nftCommands} nft commands, addresses +${r.addressesAdded.length} -${r.addressesRemoved.length}`);
    },
    { resyncMs: config.resyncSeconds * 1000, minIntervalMs: 50 },
    (e) => log(`reconcile failed, will retry: ${(e as Error).message}`),
  );
  const app = buildSlbApp({ service, token: tokenOf(config.api) });
  await listenOn(app, config.api.listen);
  runner.start();
  log(`listening on ${config.api.listen}`);
  stopOnSignals([() => runner?.stop(), () => service.stop(), () => helper.close(), () => app.close(), () => rtnl.close()]);
}

nodeCli({
  prog: 'fwlb-slb',
  usage: 'fwlb-slb run --config FILE | fwlb-slb doctor [--config FILE] | fwlb-slb check-config FILE',
  loadConfig,
  run,
  doctor: (c) => slbDoctor(c?.interface),
});
