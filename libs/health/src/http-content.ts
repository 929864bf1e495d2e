// http-content checker: the http checker, and the body (at most readMax bytes) must contain a string or match a regex.
import type { HttpContentSpec } from './check-spec';
import type { Checker, CheckTarget } from './checker';
import { ContentScope, httpProbe } from './http';
import type { ProbeHelper } from './probe-helper';

export class HttpContentChecker implements Checker {
  readonly kind = 'http-content' as const;
  constructor(
    private readonly spec: HttpContentSpec,
    private readonly helper: ProbeHelper,
    private readonly content?: ContentScope,
  ) {}

  check(t: CheckTarget, responseMs: number) {
    return httpProbe(this.spec, this.helper, t, responseMs, { expect: this.spec.expect, contains: this.spec.contains, regex: this.spec.regex }, this.content);
  }
}
