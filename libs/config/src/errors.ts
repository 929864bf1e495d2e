// Typed configuration errors with stable codes; pure layer of libs/config.

export interface FieldProblem {
  /** JSON pointer of the offending field, e.g. /firewalls/1/id */
  field: string;
  message: string;
}

/** The most problems the message lists (all of them stay in `problems`): 1,000 VIPs with one mistake each is one screen, not 1,000 lines. */
export const MESSAGE_PROBLEMS = 20;

export class ConfigError extends Error {
  readonly code = 'FWLB_CONFIG_INVALID';
  constructor(
    readonly problems: FieldProblem[],
    source = 'config',
  ) {
    const shown = problems.slice(0, MESSAGE_PROBLEMS).map((p) => `${p.field || '/'}: ${p.message}`);
    const more = problems.length > MESSAGE_PROBLEMS ? [`and ${problems.length - MESSAGE_PROBLEMS} more problems`] : [];
    super(`${source} is invalid: ` + [...shown, ...more].join('; '));
    this.name = 'ConfigError';
  }
}
