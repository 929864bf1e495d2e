// The SLB API's error registry: one stable code, message and HTTP status each (fastify's createError model).
import { CommonErrors, createError } from '@fwlb/service';

export const SlbErrors = {
  ...CommonErrors,
  NO_SUCH_VIP: createError('FWLB_NO_SUCH_VIP', 'no VIP with this id', 404),
  NO_SUCH_MEMBER: createError('FWLB_NO_SUCH_MEMBER', 'no member with this address:port in the VIP', 404),
};
