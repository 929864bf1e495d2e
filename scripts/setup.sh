#!/usr/bin/env bash
# Installs what fwlb's lab, tests and benchmarks need on a Debian machine (as root), then builds.
# Debian packages only when missing, `npm ci` only when the lock file changed, then `tsc -b`.
set -euo pipefail
cd "$(dirname "$0")/.."

# command:package pairs
need="nft:nftables conntrack:conntrack ip:iproute2 sysctl:procps ping:iputils-ping redis-server:redis-server iperf3:iperf3 tcpdump:tcpdump docker-compose:docker-compose wrk:wrk iptables:iptables openssl:openssl redis-benchmark:redis-tools systemd-analyze:systemd promtool:prometheus chromium:chromium conntrackd:conntrackd keepalived:keepalived curl:curl haproxy:haproxy bird:bird2"
missing=()
for pair in $need; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# The forwarding benchmark profiles each path with perf (BENCH_PERF=1).
[ "${1:-}" = "--bench" ] && { command -v perf >/dev/null 2>&1 || missing+=(linux-perf); }
# The probe helper (libs/health/helper) runs on the system python's standard library.
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "fwlb setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "fwlb setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # The package may start a system HAProxy (empty config); fwlb-slb starts its own, per SLB, with its own config.
  case " ${missing[*]} " in *" haproxy "*) invoke-rc.d haproxy stop >/dev/null 2>&1 || true ;; esac
  # Likewise BIRD: the lab runs one per namespace, each with its own configuration and control socket.
  case " ${missing[*]} " in *" bird2 "*) invoke-rc.d bird stop >/dev/null 2>&1 || true ;; esac
fi

# redis-server's package may start a system instance; fwlb's tests start their own on loopback ports.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund >&2
fi
npx tsc -b >&2
