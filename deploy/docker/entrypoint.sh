#!/bin/sh
# Container entry point: names interfaces as the lab does (Docker names them ethN in attach order), then runs the role.
# FWLB_IFACES holds "name=address" pairs, "gw=address" and "route=prefix,via" items.
set -eu
for item in ${FWLB_IFACES:-}; do
  key=${item%%=*}; val=${item#*=}
  case $key in
    gw) ip route replace default via "$val" ;;
    route) ip route replace "${val%%,*}" via "${val#*,}" ;;
    *)
      dev=$(ip -o -4 addr show | awk -v a="$val" '{split($4, p, "/"); if (p[1] == a) print $2}')
      if [ -n "$dev" ] && [ "$dev" != "$key" ]; then
        ip link set dev "$dev" down
        ip link set dev "$dev" name "$key"
        ip link set dev "$key" up
      fi ;;
  esac
done
# Docker's default route points at its own bridge gateway; routers and hosts use the lab's routes instead.
case ${FWLB_ROLE:-} in
  firewall) ip route del default 2>/dev/null || true; nft -f /opt/fwlb/deploy/lab/firewall.nft; exec sleep infinity ;;
  outside|inside) ip route del default 2>/dev/null || true; exec node /opt/fwlb/apps/balancer/dist/main.js run --config /etc/fwlb/config.json ;;
  slb)
    nft add table ip lab_snat
    nft add chain ip lab_snat post '{ type nat hook postrouting priority srcnat; }'
    nft add rule ip lab_snat post oifname up0 ip saddr 10.20.0.0/24 masquerade
    exec node /opt/fwlb/apps/slb/dist/main.js run --config /etc/fwlb/config.json ;;
  client|server) exec node /opt/fwlb/deploy/lab/dist/agent.js serve --tcp 7007 --udp 7007 --http 8080 ;;
  *) exec "$@" ;;
esac
