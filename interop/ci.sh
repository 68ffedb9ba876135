#!/bin/bash
# interop/ci.sh: the project test command's interop step. Boots one guest once and runs the
# basic and special suites against hanfs (target/release/hanfs-server, rebuilt if stale).
# The lock suite joins once hanfs serves NLM; until then: interop/run.sh --server ganesha --suite lock
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
start=$(date +%s)
rc=0
"$HERE/run.sh" --server hanfs --suite basic,special --guests 1 "$@" || rc=$?
echo "interop/ci.sh: exit $rc after $(( $(date +%s) - start )) s"
exit "$rc"
