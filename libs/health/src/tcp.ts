// tcp checker: full connect (SYN, SYN/ACK, ACK), then close with FIN (default) or RST.
import type { TcpSpec } from './check-spec';
import type { Checker, CheckTarget } from './checker';
import { portOf, steerOf } from './checker';
import type { ProbeHelper } from './probe-helper';

export class TcpChecker implements Checker {
  readonly kind = 'tcp' as const;
  constructor(
    private readonly spec: TcpSpec,
    private readonly helper: ProbeHelper,
  ) {}

  check(t: CheckTarget, responseMs: number) {
    return this.helper.request({
      op: 'connect',
      target: t.address,
      port: portOf(this.spec.port, t, this.kind),
      timeoutMs: responseMs,
      close: this.spec.close ?? 'fin',
      ...steerOf(this.spec),
    });
  }
}
