// Unit: the systemd units are accepted by `systemd-analyze verify` without a warning and keep least privilege.
import { t } from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '@fwlb/lab';

const units = ['fwlb.service', 'fwlb-slb.service'].map((u) => join(REPO, 'deploy/systemd', u));

t.test('systemd-analyze verify accepts both units, without a warning', async (t) => {
  const r = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8' });
  t.equal(r.status, 0, `exit ${r.status}`);
  t.equal((r.stdout + r.stderr).trim(), '', 'no warning (unknown keys are only warnings)');
});

t.test('BGP: fwlb-unfit.service verifies, fwlb.service runs it only when systemd gives up, the drop-in grants BIRD access only', async (t) => {
  const unfit = join(REPO, 'deploy/systemd/fwlb-unfit.service');
  const r = spawnSync('systemd-analyze', ['verify', unfit], { encoding: 'utf8' });
  t.equal(r.status, 0, `exit ${r.status}`);
  t.equal((r.stdout + r.stderr).trim(), '');
  const text = readFileSync(unfit, 'utf8');
  t.match(text, /^ExecStart=-\/usr\/bin\/node \S+main\.js announce unfit --config /m);
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
