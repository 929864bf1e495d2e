// API errors with stable codes, messages and HTTP statuses (fastify's createError model); shared by the node processes' APIs.

export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly statusCode: number,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export type ErrorFactory = ((detail?: string, details?: unknown) => ApiError) & { code: string; statusCode: number; message: string };

export function createError(code: string, message: string, statusCode: number): ErrorFactory {
  const make = (detail?: string, details?: unknown) => new ApiError(code, detail ? `${message}: ${detail}` : message, statusCode, details);
  return Object.assign(make, { code, statusCode, message });
}

/** Errors every fwlb API shares. */
export const CommonErrors = {
  UNAUTHORIZED: createError('FWLB_UNAUTHORIZED', 'a valid bearer token is required for this request', 401),
  BAD_REQUEST: createError('FWLB_BAD_REQUEST', 'the request is invalid', 400),
  APPLY_FAILED: createError('FWLB_APPLY_FAILED', 'the change could not be applied to the kernel; nothing was changed', 500),
  NOT_FOUND: createError('FWLB_NOT_FOUND', 'no such route', 404),
  SAVE_FAILED: createError(
    'FWLB_SAVE_FAILED',
    'the change is live in the kernel, but the state file could not be written: it is lost at the next restart',
    500,
  ),
  NO_RELOAD: createError('FWLB_NO_RELOAD', 'this process was started without a config file to reload', 404),
  RELOAD_REFUSED: createError('FWLB_RELOAD_REFUSED', 'the config file was refused as a whole; the process keeps running the config it had', 422),
  INTERNAL: createError('FWLB_INTERNAL', 'internal error (the node log has the detail); the kernel keeps its last good state', 500),
};
