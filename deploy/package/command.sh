#!/bin/sh
# A packaged fwlb command: runs it under the Node.js on PATH, or FWLB_NODE, through the version check in launch.js.
# The package's files are found from this script's own place, so an unpacked tree (dpkg -x) runs as installed.
here=$(dirname "$(readlink -f "$0")")
# Node.js's own options (node-flags: one per line, no spaces, # comments) go unquoted so that each is a word.
# shellcheck disable=SC2046
exec "${FWLB_NODE:-node}" $(grep -v '^#' "$here/../lib/fwlb/node-flags") "$here/../lib/fwlb/launch.js" "$(basename "$0")" "$@"
