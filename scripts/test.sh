#!/usr/bin/env bash
# Runs the unit tests (parallel) and the integration tests (one at a time: they share 2 cores and time packets).
# Tests are compiled by `tsc -b` to build/test and tap runs the JavaScript (typescript is pinned to 5.9; see README).
# Writes tap's own counts to build/test-summary.txt for .ci/run.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
rm -f build/test-summary.txt
rc=0
run() {
  local name=$1; shift
  local out=build/tap-$name.tap
  npx tap --disable-coverage --reporter=tap "$@" | tee "$out"
  local r=${PIPESTATUS[0]}
  [ "$r" = 0 ] || rc=$r
  node scripts/tap-count.js "$out" >> build/test-summary.txt
}
# Lint and format first: each is one check in the counts ("1 passed" or "1 failed"), and its output says what to fix.
check() {
  local name=$1 fix=$2; shift 2
  if "$@" > "build/$name.txt" 2>&1; then
    echo "1 passed, 0 failed" >> build/test-summary.txt
  else
    cat "build/$name.txt"
    echo "$name failed: see above, or run \`$fix\`" >&2
    echo "0 passed, 1 failed" >> build/test-summary.txt
    rc=1
  fi
}
check lint 'npm run lint' npx eslint .
check format 'npm run format' npm run --silent format:check
run unit --jobs=2 --timeout=120 'build/test/unit/**/*.test.js'
if [ "${FWLB_SKIP_INTEGRATION:-}" != 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "integration tests need root (network namespaces)" >&2
    rc=1
  else
    run integration --jobs=1 --timeout=600 'build/test/integration/**/*.test.js'
  fi
fi
node scripts/tap-count.js --sum build/test-summary.txt
exit $rc
