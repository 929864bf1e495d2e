// Typed configuration errors with stable codes; pure layer of libs/config.

export interface FieldProblem {
  /** JSON pointer of the offending field, e.g. /firewalls/1/id */
  field: string;
  message: string;
}

export class ConfigError extends Error {
  readonly code = 'FWLB_CONFIG_INVALID';
  constructor(readonly problems: FieldProblem[], source = 'config') {
    super(`${source} is invalid: ` + problems.map((p) => `${p.field || '/'}: ${p.message}`).join('; '));
    this.name = 'ConfigError';
  }
}
