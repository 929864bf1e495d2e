#!/bin/sh
# A packaged fwlb command: runs it under the Node.js on PATH, or FWLB_NODE, through the version check in launch.js.
# The package's files are found from this script's own place, so an unpacked tree (dpkg -x) runs as installed.
here=$(dirname "$(readlink -f "$0")")
exec "${FWLB_NODE:-node}" "$here/../lib/fwlb/launch.js" "$(basename "$0")" "$@"
