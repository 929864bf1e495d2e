#!/usr/bin/env node
// Writes deploy/configs/redundant/ (the node and keepalived configs docker-compose.redundant.yml mounts) from the lab's
// VRRP topology; run after `npx tsc -b` when the topology or the keepalived template changes (compose.test.ts checks).
const { writeFileSync, mkdirSync } = require('node:fs');
const { join } = require('node:path');
const { redundantDeployFiles } = require('../deploy/lab/dist/index.js');

const dir = join(__dirname, '..', 'deploy', 'configs', 'redundant');
mkdirSync(dir, { recursive: true });
for (const [file, content] of Object.entries(redundantDeployFiles())) writeFileSync(join(dir, file), content);
console.log(`wrote ${Object.keys(redundantDeployFiles()).length} files to ${dir}`);
