// conntrackd's config for a lab firewall in a sync pair; pure layer of deploy/lab. fwlb does not run
// conntrackd on real firewalls: this is the lab's stand-in for what a firewall cluster does (FGSP, pfsync).

export interface ConntrackdPeer {
  /** This firewall's address on the sync link, and its peer's. */
  self: string;
  peer: string;
  /** The sync link's interface in this firewall's namespace. */
  iface: string;
  /** Where the lock file and the control socket go (one per firewall). */
  dir: string;
  name: string;
}

/**
 * FTFW over UDP unicast, with the external cache disabled: every state the peer sends is written straight into
 * this firewall's kernel conntrack table (write-through). Why not the external cache plus `conntrackd -c` (commit)
 * at failover: nobody tells the survivor that its peer failed silently (fwlb steers around the firewalls, it does
 * not run on them), so a commit would never come; with write-through the state is already in the kernel when the
 * first packet of a moved flow arrives.
 */
export function conntrackdConfig(p: ConntrackdPeer): string {
  return `Sync {
  Mode FTFW {
    DisableExternalCache on
    ResendQueueSize 131072
    PurgeTimeout 60
    ACKWindowSize 300
  }
  UDP {
    IPv4_address ${p.self}
    IPv4_Destination_Address ${p.peer}
    Port 3780
    Interface ${p.iface}
    SndSocketBuffer 1249280
    RcvSocketBuffer 1249280
    Checksum on
  }
}
General {
  HashSize 32768
  HashLimit 131072
  LogFile off
  Syslog off
  LockFile ${p.dir}/conntrackd-${p.name}.lock
  UNIX {
    Path ${p.dir}/conntrackd-${p.name}.ctl
  }
  NetlinkBufferSize 2097152
  NetlinkBufferSizeMaxGrowth 8388608
  NetlinkOverrunResync on
  NetlinkEventsReliable off
  Filter From Userspace {
    Protocol Accept {
      TCP
      UDP
    }
    Address Ignore {
      IPv4_address 127.0.0.1
      IPv4_address ${p.self}
      IPv4_address ${p.peer}
    }
  }
}
`;
}
