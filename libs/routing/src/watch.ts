// Kernel notices of link, route, rule and address changes (rtnetlink multicast groups); I/O layer of libs/routing.
import { createNetlink, NetlinkMessage, NetlinkSocket, Protocol, rt } from 'netlink';
import { formatAddress } from '@fwlb/flowhash';
import { RoutingEvent } from './model';

const AF_INET6 = 10;
/** rtnetlink message types (linux/rtnetlink.h). */
const RTM_DELADDR = 21;

export interface RoutingWatch {
  close(): void;
}

/** What to listen for: links always; routes and ip rules of both families (default), interface addresses that go. */
export interface WatchGroups {
  routes?: boolean;
  addresses?: boolean;
}

/**
 * Listen for changes, on a socket of its own (a request socket would take a notice for a reply). Only the groups a
 * caller needs: on a router with a full table, route notices are many, and each is parsed. A lost notice (the
 * socket's buffer overflowed) is reported to `onLost`, and the watch goes on on a new socket: the caller cannot know
 * what changed, so it checks everything.
 */
export function watchRouting(onEvent: (e: RoutingEvent) => void, onLost: (e: Error) => void, groups: WatchGroups = {}): RoutingWatch {
  const names: (keyof typeof rt.MulticastGroups)[] = [
    'LINK',
    ...(groups.routes !== false ? (['IPV4_ROUTE', 'IPV6_ROUTE', 'IPV4_RULE', 'IPV6_RULE'] as const) : []),
    ...(groups.addresses ? (['IPV4_IFADDR', 'IPV6_IFADDR'] as const) : []),
  ];
  let sock: NetlinkSocket | null = null;
  let closed = false;
  const notice = (type: number, m: rt.Message) => {
    if (m.kind === 'link') return onEvent({ kind: 'link' });
    const family = m.data.family === AF_INET6 ? 6 : 4;
    if (m.kind === 'route') return onEvent({ kind: 'route', family, table: m.attrs.table ?? m.data.table ?? 0 });
    if (m.kind === 'rule') return onEvent({ kind: 'rule', family, priority: m.attrs.priority ?? 0 });
    // An address that appears is someone's add (often this process's own): only one that goes needs a look.
    if (m.kind === 'address' && type === RTM_DELADDR) {
      const a = m.attrs.local ?? m.attrs.address;
      if (a && (a.length === 4 || a.length === 16)) onEvent({ kind: 'address', address: formatAddress(a) });
    }
  };
  const open = () => {
    // A plain netlink socket, parsed here: rtnetlink's own parses every notice, and drops whether a thing came or went.
    const s = createNetlink(Protocol.ROUTE);
    for (const g of names) s.addMembership(rt.MulticastGroups[g]);
    s.on('message', (msgs: NetlinkMessage[]) => {
      for (const raw of msgs) {
        let m: rt.Message;
        try {
          m = rt.parseMessage(raw.type, raw.data);
        } catch {
          continue;
        }
        notice(raw.type, m);
      }
    });
    s.on('error', (e: Error) => {
      s.close();
      if (closed) return;
      onLost(e);
      sock = open();
    });
    return s;
  };
  sock = open();
  return {
    close: () => {
      closed = true;
      sock?.close();
    },
  };
}
