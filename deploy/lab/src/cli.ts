#!/usr/bin/env node
// `npm run lab [-- --json] [--keep] [--broken] [--redundant ecmp|vrrp]`: builds the sandwich, runs the scenario, prints
// the report, cleans up. `--redundant`: 2 nodes per side with a Redis of its own, behind ECMP (BGP with BFD: BIRD in
// every node, router and firewall) or keepalived.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startRedis } from './bench-tools';
import { Lab, uniquePrefix } from './lab';
import { formatReport, runScenario } from './scenario';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const keep = args.includes('--keep');
  const broken = args.includes('--broken');
  const r = args.indexOf('--redundant');
  const mode = r >= 0 ? args[r + 1] : null;
  if (mode !== null && mode !== 'ecmp' && mode !== 'vrrp') {
    console.error('usage: npm run lab -- [--json] [--keep] [--broken] [--redundant ecmp|vrrp]');
    process.exit(2);
  }
  const prefix = uniquePrefix('lab');
  const runDir = join(tmpdir(), `fwlb-${prefix}`);
  let redis: ChildProcess | null = null;
  let redisDir: string | null = null;
  let sessionTable: string | undefined;
  if (mode) {
    redisDir = mkdtempSync(join(tmpdir(), 'fwlb-lab-redis-'));
    redis = await startRedis(join(redisDir, 'redis.sock'), redisDir);
    sessionTable = `unix:${join(redisDir, 'redis.sock')}`;
  }
  // Dual stack: IPv4 and IPv6 traffic in one run, reported by family.
  const lab = new Lab({ prefix, runDir, broken, ipv6: true, ...(mode ? { nodesPerSide: 2, mode, sessionTable, routing: 'bgp' as const } : {}) });
  let code = 0;
  const cleanup = () => {
    if (!keep) {
      lab.teardown();
      redis?.kill('SIGKILL');
      if (redisDir) rmSync(redisDir, { recursive: true, force: true });
    }
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    lab.build();
    await lab.startServers();
    await lab.startNodes();
    if (mode === 'ecmp') await lab.waitBgp();
    if (mode === 'vrrp') await lab.startKeepalived();
    const report = await runScenario(lab);
    if (json) console.log(JSON.stringify({ prefix, broken, ...report }, null, 2));
    else {
      console.log(`fwlb lab ${prefix}${broken ? ' (broken baseline: asymmetric hashing, no learning)' : ''}${mode ? ` (2 nodes per side, ${mode})` : ''}`);
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
