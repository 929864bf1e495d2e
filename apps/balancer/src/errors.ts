// The balancer API's error registry: one stable code, message and HTTP status each (fastify's createError model).
import { CommonErrors, createError } from '@fwlb/service';

export { ApiError } from '@fwlb/service';

export const Errors = {
  ...CommonErrors,
  NO_SUCH_FIREWALL: createError('FWLB_NO_SUCH_FIREWALL', 'no firewall with this id', 404),
  NO_SESSION_TABLE: createError('FWLB_NO_SESSION_TABLE', 'this node has no sessionTable configured', 404),
  NO_BGP: createError('FWLB_NO_BGP', 'this node has no bgp section configured: it announces nothing', 404),
  NOT_SHARED: createError(
    'FWLB_NOT_SHARED',
    'the admin change could not be shared with the other nodes through the session table, so nothing was changed (nodes that switched at different moments would send the two directions of a session to different firewalls); send it again once Redis answers, or with ?local=true to apply it on this node alone, at once',
    503,
  ),
};
