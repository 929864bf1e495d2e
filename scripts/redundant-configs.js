#!/usr/bin/env node
// Writes deploy/configs/redundant/ (the node and keepalived configs docker-compose.redundant.yml mounts) and
// deploy/configs/bgp/ (the node and BIRD configs docker-compose.bgp.yml mounts) and deploy/configs/slb-group/ (the
// nodes', SLB nodes' and keepalived configs docker-compose.slb-group.yml mounts) from the lab's topologies; run after
// `npx tsc -b` when the topology, the keepalived template or the BIRD rendering changes (compose.test.ts checks).
const { writeFileSync, mkdirSync } = require('node:fs');
const { join } = require('node:path');
const { redundantDeployFiles, bgpDeployFiles, slbGroupDeployFiles } = require('../deploy/lab/dist/index.js');

for (const [name, files] of [
  ['redundant', redundantDeployFiles()],
  ['bgp', bgpDeployFiles()],
  ['slb-group', slbGroupDeployFiles()],
]) {
  const dir = join(__dirname, '..', 'deploy', 'configs', name);
  mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content);
  console.log(`wrote ${Object.keys(files).length} files to ${dir}`);
}
