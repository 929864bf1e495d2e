#!/usr/bin/env node
// `npm run lab [-- --json] [--keep] [--broken]`: builds the sandwich, runs the scenario, prints the report, cleans up.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, uniquePrefix } from './lab';
import { formatReport, runScenario } from './scenario';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const keep = args.includes('--keep');
  const broken = args.includes('--broken');
  const prefix = uniquePrefix('lab');
  const lab = new Lab({ prefix, runDir: join(tmpdir(), `fwlb-${prefix}`), broken });
  let code = 0;
  const cleanup = () => {
    if (!keep) lab.teardown();
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    lab.build();
    await lab.startServers();
    await lab.startNodes();
    const report = await runScenario(lab);
    if (json) console.log(JSON.stringify({ prefix, broken, ...report }, null, 2));
    else {
      console.log(`fwlb lab ${prefix}${broken ? ' (broken baseline: asymmetric hashing, no learning)' : ''}`);
      console.log(formatReport(report));
    }
    code = report.failed.total || report.totals.drops ? 1 : 0;
    if (keep) console.error(`kept: namespaces ${prefix}-*, run dir ${lab.t.opts.runDir}`);
  } catch (e) {
    console.error(`lab failed: ${e instanceof Error ? e.message : e}`);
    code = 2;
  } finally {
    cleanup();
  }
  process.exit(code);
}

void main();
