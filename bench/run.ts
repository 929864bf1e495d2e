// `npm run bench`: runs every benchmark in turn (each prints medians and ratios measured in the same run).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

for (const b of [
  'sandwich',
  'dual-stack',
  'sync-groups',
  'node-redundancy',
  'port-reuse',
  'health-detection',
  'slb',
  'l7',
  'slb-control',
  'slb-group',
  'sessions',
  'nft-listing',
  'lookup-miss',
  'pin-change',
  'api-latency',
  'controller-cpu',
]) {
  console.log(`== ${b}`);
  const r = spawnSync(process.execPath, [join(__dirname, `${b}.js`)], { stdio: 'inherit' });
  if (r.status !== 0) process.exitCode = 1;
}
