#!/bin/sh
# Container entry point: names interfaces as the lab does (Docker names them ethN in attach order), then runs the role.
# FWLB_IFACES holds "name=address" pairs (IPv4: they name the interfaces), "gw=address", "gw6=address" (the IPv6
# default route), "route=prefix,via[,via...]" (several: a multipath route; IPv6 prefixes too) and "mac=name,address"
# items (after the name=address that names the interface).
set -eu
for item in ${FWLB_IFACES:-}; do
  key=${item%%=*}; val=${item#*=}
  case $key in
    gw) ip route replace default via "$val" ;;
    gw6) ip -6 route del default 2>/dev/null || true; ip -6 route replace default via "$val" ;;
    route)
      prefix=${val%%,*}; vias=${val#*,}
      case $vias in
        # Addresses only (no spaces): the unquoted $nh splits into words on purpose.
        *,*) nh=""; for v in $(echo "$vias" | tr ',' ' '); do nh="$nh nexthop via $v"; done; ip route replace "$prefix" $nh ;;
        *) ip route replace "$prefix" via "$vias" ;;
      esac ;;
    mac) ip link set dev "${val%%,*}" address "${val#*,}" ;;
    *)
      dev=$(ip -o -4 addr show | awk -v a="$val" '{split($4, p, "/"); if (p[1] == a) print $2}')
      if [ -n "$dev" ] && [ "$dev" != "$key" ]; then
        ip link set dev "$dev" down
        ip link set dev "$dev" name "$key"
        ip link set dev "$key" up
      fi ;;
  esac
done
# Docker's default routes point at its own bridge gateways; routers and hosts use the lab's routes instead.
nodefault() { ip route del default 2>/dev/null || true; ip -6 route del default 2>/dev/null || true; }
# The configs read their API token from /etc/fwlb/token: each container makes its own (mutations then need it from
# inside the container: docker-compose exec ob1 cat /etc/fwlb/token).
token() { mkdir -p /var/lib/fwlb; [ -s /etc/fwlb/token ] || { umask 077; head -c 24 /dev/urandom | base64 > /etc/fwlb/token; }; }
# ECMP through BGP (docker-compose.bgp.yml): the routers, the SLB node and the firewalls run the lab's BIRD when it is
# mounted, and learn their routes over the nodes from it (Docker's default route would hide the SLB node's).
peerbird() { if [ -f /etc/fwlb/bird.conf ]; then nodefault; mkdir -p /run/bird; bird -c /etc/fwlb/bird.conf -s /run/bird/bird.ctl; fi; }
# A node with a bgp section runs BIRD from the file fwlb writes (Debian's places); until fwlb has written it, BIRD
# starts with interfaces only.
nodebird() {
  if grep -q '"bgp"' /etc/fwlb/config.json; then
    mkdir -p /etc/bird /run/bird
    [ -f /etc/bird/bird.conf ] || echo 'protocol device { }' > /etc/bird/bird.conf
    bird -c /etc/bird/bird.conf -s /run/bird/bird.ctl
  fi
}
case ${FWLB_ROLE:-} in
  router) nodefault; peerbird; exec sleep infinity ;;
  firewall) nodefault; nft -f /opt/fwlb/deploy/lab/firewall.nft; peerbird; exec sleep infinity ;;
  outside|inside)
    nodefault
    # Node redundancy, active/standby (docker-compose.redundant.yml): keepalived from fwlb's template, if mounted.
    if [ -f /etc/fwlb/keepalived.conf ]; then keepalived -f /etc/fwlb/keepalived.conf; fi
    nodebird
    token
    exec node /opt/fwlb/apps/balancer/dist/main.js run --config /etc/fwlb/config.json ;;
  slb)
    peerbird
    # An SLB group (docker-compose.slb-group.yml): keepalived moves the group's addresses, from fwlb's template.
    if [ -f /etc/fwlb/keepalived.conf ]; then keepalived -f /etc/fwlb/keepalived.conf; fi
    token
    nft add table ip lab_snat
    nft add chain ip lab_snat post '{ type nat hook postrouting priority srcnat; }'
    nft add rule ip lab_snat post oifname up0 ip saddr 10.20.0.0/24 masquerade
    exec node /opt/fwlb/apps/slb/dist/main.js run --config /etc/fwlb/config.json ;;
  client|server) exec node /opt/fwlb/deploy/lab/dist/agent.js serve --tcp 7007 --udp 7007 --http 8080 --proxy-http 8088 ;;
  *) exec "$@" ;;
esac
