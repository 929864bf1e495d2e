// Test helper: an SLB service and its API over a fake kernel (SLB table, VIP addresses) and fake monitors.
import { validateSlbConfig } from '@fwlb/config';
import { HealthEvent } from '@fwlb/health';
import { AddressPort, buildSlbApp, MonitorFactory, SlbDeps, SlbService } from '@fwlb/slb';
import { AuditRecord } from '@fwlb/service';
import { fakeSlbKernel } from './fake-slb-kernel';

export const TOKEN = 'test-token-0123456789abcdef';
export const web = () => ({
  id: 'web',
  address: '203.0.113.100',
  port: 80,
  protocol: 'tcp',
  scheduler: 'rr',
  members: [
    { address: '10.20.0.11', port: 8080 },
    { address: '10.20.0.12', port: 8080, weight: 2 },
  ],
});

export function setup(save?: (vips: readonly unknown[]) => void | Promise<void>, local?: SlbDeps['local']) {
  const nft = fakeSlbKernel();
  const addrs = new Set<string>();
  let failAddress = false;
  const addresses: AddressPort & { addrs: Set<string>; failNext(): void } = {
    addrs,
    failNext: () => (failAddress = true),
    labelledAddresses: async () => [...addrs],
    addAddress: async (_i, a) => {
      if (failAddress) {
        failAddress = false;
        throw new Error('injected');
      }
      addrs.add(a);
    },
    delAddress: async (_i, a) => void addrs.delete(a),
  };
  const monitors = new Map<string, { emit(up: boolean): void; stopped: boolean }>();
  const factory: MonitorFactory = (key, _v, _m, initial, onEvent) => {
    let state = initial;
    const h = {
      stopped: false,
      emit(up: boolean) {
        const ev: HealthEvent = { from: state, to: up ? 'up' : 'down', at: 1, reason: up ? 'passed' : 'refused' };
        state = ev.to;
        onEvent(ev);
      },
      get state() {
        return state;
      },
      last: null,
      stop() {
        h.stopped = true;
      },
    };
    monitors.set(key, h);
    return h;
  };
  const config = validateSlbConfig({ interface: 'up0', seed: 9, vips: [web()] });
  const s = new SlbService(config, { kernel: nft, addresses, monitors: factory, save, local });
  const audits: AuditRecord[] = [];
  const app = buildSlbApp({ service: s, token: TOKEN, audit: (r) => void audits.push(r) });
  return { nft, addresses, monitors, s, app, audits };
}
