#!/usr/bin/env bash
# Installs fwlb from this checkout on a Debian host: the code in /opt/fwlb (built), the units, /etc/fwlb for configs.
# Run as root: deploy/systemd/install.sh [PREFIX=/opt/fwlb]. Enable with `systemctl enable --now fwlb` once
# /etc/fwlb/node.json exists (see deploy/configs/ and the README's "Deploying on real hosts").
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
prefix="${1:-/opt/fwlb}"
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
bash "$src/scripts/setup.sh"
mkdir -p "$prefix" /etc/fwlb
if [ "$src" != "$prefix" ]; then
  cp -a "$src/." "$prefix/"
fi
install -m 0644 "$src/deploy/systemd/fwlb.service" "$src/deploy/systemd/fwlb-slb.service" "$src/deploy/systemd/fwlb-unfit.service" /etc/systemd/system/
sed -i "s#/opt/fwlb#$prefix#g" /etc/systemd/system/fwlb.service /etc/systemd/system/fwlb-slb.service /etc/systemd/system/fwlb-unfit.service
# BGP through BIRD (Debian's bird2): the drop-in lets fwlb write BIRD's configuration and use its control socket.
if getent group bird >/dev/null; then
  install -d /etc/systemd/system/fwlb.service.d
  install -m 0644 "$src/deploy/systemd/fwlb.service.d/bgp.conf" /etc/systemd/system/fwlb.service.d/
fi
systemctl daemon-reload 2>/dev/null || echo "install.sh: systemd is not running here; the units are in /etc/systemd/system" >&2
echo "installed to $prefix; put the node config in /etc/fwlb/node.json (and /etc/fwlb/slb.json for the SLB tier)"
