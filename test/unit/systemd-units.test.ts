// Unit: the systemd units are accepted by `systemd-analyze verify` without a warning and keep least privilege.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '@fwlb/lab';

const units = ['fwlb.service', 'fwlb-slb.service'].map((u) => join(REPO, 'deploy/systemd', u));

/**
 * systemd-analyze verify on copies of the units whose commands (/usr/bin/fwlb, fwlb-slb: the package's) point at a
 * stub here, since verify requires an executable and the package is not installed on the test machine
 * (test/integration/package.test.ts runs the packaged commands).
 */
function verify(files: string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'fwlb-units-'));
  try {
    const stub = join(dir, 'command');
    writeFileSync(stub, '#!/bin/sh\n', { mode: 0o755 });
    const copies = files.map((f) => {
      const text = readFileSync(f, 'utf8');
      const out = join(dir, f.split('/').pop()!);
      writeFileSync(out, text.replace(/\/usr\/bin\/fwlb(-slb)?(?= )/g, stub));
      return out;
    });
    return spawnSync('systemd-analyze', ['verify', ...copies], { encoding: 'utf8' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test('systemd-analyze verify accepts both units, without a warning', async (t) => {
  const r = verify(units);
  t.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  for (const u of units) t.match(readFileSync(u, 'utf8'), /^ExecStart=\/usr\/bin\/fwlb(-slb)? run --config \/etc\/fwlb\/\w+\.json$/m, 'the packaged command');
  t.equal((r.stdout + r.stderr).trim(), '', 'no warning (unknown keys are only warnings)');
});

t.test('BGP: fwlb-unfit.service verifies, fwlb.service runs it only when systemd gives up, the drop-in grants BIRD access only', async (t) => {
  const unfit = join(REPO, 'deploy/systemd/fwlb-unfit.service');
  const r = verify([unfit]);
  t.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  t.equal((r.stdout + r.stderr).trim(), '');
  const text = readFileSync(unfit, 'utf8');
  t.match(text, /^ExecStart=-\/usr\/bin\/fwlb announce unfit --config /m);
  t.match(text, /^CapabilityBoundingSet=CAP_NET_ADMIN$/m);
  t.match(readFileSync(units[0], 'utf8'), /^OnFailure=fwlb-unfit\.service$/m);
  const dropIn = readFileSync(join(REPO, 'deploy/systemd/fwlb.service.d/bgp.conf'), 'utf8');
  t.match(dropIn, /^SupplementaryGroups=bird$/m);
  t.match(dropIn, /^ReadWritePaths=\/etc\/bird$/m);
  t.notMatch(dropIn, /Capabilit/, 'no capability added');
});

t.test('least privilege and restart policy', async (t) => {
  for (const u of units) {
    const text = readFileSync(u, 'utf8');
    t.match(text, /^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE$/m, `${u}: only the capabilities it needs`);
    t.match(text, /^AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE$/m, 'HAProxy inherits the right to bind ports below 1024');
    t.match(text, /^ProtectSystem=strict$/m);
    t.match(text, /^NoNewPrivileges=yes$/m);
    t.match(text, /^Environment=FWLB_AUDIT_LOG=\/var\/log\/fwlb\/[a-z-]+\.log$/m, 'the audit trail goes to a file of its own');
    t.match(text, /^LogsDirectory=fwlb$/m, 'in a directory systemd creates and the service may write');
    t.match(text, /^Restart=on-failure$/m);
    t.match(text, /^RestartPreventExitStatus=2 3$/m, 'a bad config or a missing kernel feature is not restarted in a loop');
    t.match(
      text,
      /^KillMode=process$/m,
      'HAProxy, started by the agent (fwlb-slb, or an inside node embedding the SLB), keeps serving when the service stops or dies',
    );
  }
});
