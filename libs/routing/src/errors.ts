// Maps the netlink package's plain-string errors to typed errors with a code; boundary of libs/routing.

export class NetlinkError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'NetlinkError';
  }
}

/** "Request rejected: EEXIST" → NetlinkError{code: 'EEXIST'}. */
export function toNetlinkError(e: unknown, what: string): NetlinkError {
  const msg = e instanceof Error ? e.message : String(e);
  const m = /rejected: (E[A-Z0-9]+)/.exec(msg) ?? /\b(E[A-Z]{3,})\b/.exec(msg);
  return new NetlinkError(m ? m[1] : 'ENETLINK', `${what}: ${msg}`);
}
