// The API's error registry: one stable code, message and HTTP status each (fastify's createError model).

export class ApiError extends Error {
  constructor(readonly code: string, message: string, readonly statusCode: number, readonly details?: unknown) {
    super(message);
    this.name = 'ApiError';
  }
}

function createError(code: string, message: string, statusCode: number) {
  const make = (detail?: string, details?: unknown) => new ApiError(code, detail ? `${message}: ${detail}` : message, statusCode, details);
  return Object.assign(make, { code, statusCode, message });
}

export const Errors = {
  UNAUTHORIZED: createError('FWLB_UNAUTHORIZED', 'a valid bearer token is required for this request', 401),
  BAD_REQUEST: createError('FWLB_BAD_REQUEST', 'the request is invalid', 400),
  NO_SUCH_FIREWALL: createError('FWLB_NO_SUCH_FIREWALL', 'no firewall with this id', 404),
  APPLY_FAILED: createError('FWLB_APPLY_FAILED', 'the change could not be applied to the kernel; nothing was changed', 500),
  NOT_FOUND: createError('FWLB_NOT_FOUND', 'no such route', 404),
};
