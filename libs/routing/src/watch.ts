// Kernel notices of link, route and rule changes (rtnetlink multicast groups); I/O layer of libs/routing.
import { createRtNetlink, RtNetlinkSocket } from 'netlink';
import { RoutingEvent } from './model';

const AF_INET6 = 10;

export interface RoutingWatch {
  close(): void;
}

/**
 * Listen for changes to links, routes and ip rules of both families, on a socket of its own (a request socket
 * would take a notice for a reply). A lost notice (the socket's buffer overflowed) is reported to `onLost`, and the
 * watch goes on on a new socket: the caller cannot know what changed, so it checks everything.
 */
export function watchRouting(onEvent: (e: RoutingEvent) => void, onLost: (e: Error) => void): RoutingWatch {
  let rt: RtNetlinkSocket | null = null;
  let closed = false;
  const open = () => {
    const s = createRtNetlink();
    for (const g of ['LINK', 'IPV4_ROUTE', 'IPV6_ROUTE', 'IPV4_RULE', 'IPV6_RULE'] as const) s.addMembership(g);
    s.on('message', (msgs) => {
      for (const m of msgs) {
        const family = m.kind === 'route' || m.kind === 'rule' ? (m.data.family === AF_INET6 ? 6 : 4) : 4;
        if (m.kind === 'link') onEvent({ kind: 'link' });
        else if (m.kind === 'route') onEvent({ kind: 'route', family, table: m.attrs.table ?? m.data.table ?? 0 });
        else if (m.kind === 'rule') onEvent({ kind: 'rule', family, priority: m.attrs.priority ?? 0 });
      }
    });
    s.socket.on('error', (e: Error) => {
      s.socket.close();
      if (closed) return;
      onLost(e);
      rt = open();
    });
    return s;
  };
  rt = open();
  return {
    close: () => {
      closed = true;
      rt?.socket.close();
    },
  };
}
