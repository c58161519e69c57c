#!/usr/bin/env bash
# Runs one fuzz target the way the project's recorded runs were made: one process, niced,
# seeded from seeds/<target>, working corpus in corpus/<target> (not committed), crashes in
# artifacts/<target>. Stops after 10 million executions or the given time, whichever first.
#
#   fuzz/run.sh <target> [seconds=1800] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: run.sh <target> [seconds] [libFuzzer flags...]}
seconds=${2:-1800}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "corpus/$target"
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); the installed
# stable compiler accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
exec nice -n 10 cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
    -rss_limit_mb=512 -malloc_limit_mb=64 -timeout=5 \
    -runs=10000000 -max_total_time="$seconds" -print_final_stats=1 "$@"
