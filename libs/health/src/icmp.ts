// icmp checker: echo request and reply over a raw socket (through the probe helper).
import type { IcmpSpec } from './check-spec';
import type { Checker, CheckTarget } from './checker';
import { steerOf } from './checker';
import type { ProbeHelper } from './probe-helper';

export class IcmpChecker implements Checker {
  readonly kind = 'icmp' as const;
  constructor(
    private readonly spec: IcmpSpec,
    private readonly helper: ProbeHelper,
  ) {}

  check(t: CheckTarget, responseMs: number) {
    return this.helper.request({ op: 'icmp', target: t.address, timeoutMs: responseMs, ...steerOf(this.spec) });
  }
}
