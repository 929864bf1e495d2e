#!/usr/bin/env node
// Writes docs/config-reference.md from the agents' config schemas (run `npm run build` first).
const { writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { configReference } = require('../libs/config/dist');
const file = join(__dirname, '..', 'docs', 'config-reference.md');
writeFileSync(file, configReference());
console.log(`wrote ${file}`);
