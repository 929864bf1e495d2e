// tcp-half-open checker: SYN from a raw socket, SYN/ACK means up; the kernel answers it with RST, so nothing is accepted.
import type { TcpHalfOpenSpec } from './check-spec';
import type { Checker, CheckTarget } from './checker';
import { portOf, steerOf } from './checker';
import type { ProbeHelper } from './probe-helper';

export class TcpHalfOpenChecker implements Checker {
  readonly kind = 'tcp-half-open' as const;
  constructor(
    private readonly spec: TcpHalfOpenSpec,
    private readonly helper: ProbeHelper,
  ) {}

  check(t: CheckTarget, responseMs: number) {
    return this.helper.request({ op: 'syn', target: t.address, port: portOf(this.spec.port, t, this.kind), timeoutMs: responseMs, ...steerOf(this.spec) });
  }
}
