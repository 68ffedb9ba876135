#!/bin/bash
# interop/ci.sh: the project test command's interop step. Boots two guests and runs the basic,
# special, subdir (a mount below the export) and lock suites against hanfs
# (target/release/hanfs-server, rebuilt if stale): guest A runs the suites in order, guest B
# joins for the two-guest lock cases (conflict, F_GETLK holder, F_SETLKW granted by a GRANTED
# callback, killed holder, power-off and SM_NOTIFY).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
start=$(date +%s)
rc=0
"$HERE/run.sh" --server hanfs --suite basic,special,subdir,lock --guests 2 "$@" || rc=$?
echo "interop/ci.sh: exit $rc after $(( $(date +%s) - start )) s"
exit "$rc"
