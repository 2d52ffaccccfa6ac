#!/usr/bin/env bash
# Side-by-side benchmark of holdfast-plugin against polyplug 0.1.3 (issue 14).
#
# Builds polyplug 0.1.3 from crates.io in a scratch directory outside this
# checkout (the fixture plugins and bench harness of scripts/bench-vs-polyplug/,
# written for this comparison against polyplug's public API), builds
# holdfast-plugin's `runtime` bench, runs holdfast's rows and then polyplug's
# with the same rustc, and prints one table of medians and ratios.
# docs/BENCHMARKS.md ("Side by side with polyplug 0.1.3") says what each row
# measures on each side.
#
# Usage: scripts/bench-vs-polyplug.sh [--quick]
#   --quick   1 s warm-up, 2 s measurement, 10 samples per row: a smoke check
#             of the whole pipeline, not figures to quote.
# Environment:
#   HOLDFAST_VS_POLYPLUG_DIR  scratch directory (default
#                             ${TMPDIR:-/tmp}/holdfast-vs-polyplug); kept
#                             between runs as a build cache.
#   CARGO_TARGET_DIR          honoured for holdfast's side only.
# Needs only the Rust toolchain and crates.io.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench-vs-polyplug: $*" >&2; exit 1; }

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$arg' (see --help)" ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
scratch=${HOLDFAST_VS_POLYPLUG_DIR:-${TMPDIR:-/tmp}/holdfast-vs-polyplug}
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd -P)
case "$scratch/" in
    "$repo"/*) die "the scratch directory $scratch is inside the checkout; set HOLDFAST_VS_POLYPLUG_DIR elsewhere" ;;
esac
holdfast_target=${CARGO_TARGET_DIR:-$repo/target}
since=$(date +%s)
started=$SECONDS

if [ "$quick" = 1 ]; then
    criterion_args=(--warm-up-time 1 --measurement-time 2 --sample-size 10)
else
    criterion_args=()
fi
# holdfast's rows that have a polyplug counterpart (criterion ids).
# The two floor rows have none: the report prints them against polyplug's
# reload.
filter='^(dispatch/(direct|cached)|load_bundle/full|reload/(total|floor_dlopen|floor_copy_and_dlopen)|dispatch_while_reloading/.*)$'

# The scratch copy: sources refreshed from the checkout, build products kept.
cp -R "$repo/scripts/bench-vs-polyplug/." "$scratch/"
mkdir -p "$scratch/bundles"

rustc_repo=$(cd "$repo" && rustc -vV)
rustc_scratch=$(cd "$scratch/harness" && rustc -vV)
[ "$rustc_repo" = "$rustc_scratch" ] ||
    die "different compilers in the checkout and the scratch directory (rust-toolchain file?):
$rustc_repo
---
$rustc_scratch"

echo "== building polyplug 0.1.3's side in $scratch"
CARGO_TARGET_DIR="$scratch/target-fixtures" \
    cargo build --release --quiet --manifest-path "$scratch/fixtures/Cargo.toml"
(cd "$scratch/harness" && CARGO_TARGET_DIR="$scratch/target" cargo bench --quiet --no-run --bench polyplug)
(cd "$scratch/harness" && CARGO_TARGET_DIR="$scratch/target" cargo build --quiet --release --bin report)
echo "== building holdfast's side"
(cd "$repo" && cargo bench --quiet --no-run -p holdfast-plugin --bench runtime)

echo "== running holdfast-plugin's rows (log: $scratch/holdfast.log)"
(cd "$repo" && cargo bench --quiet -p holdfast-plugin --bench runtime -- "$filter" "${criterion_args[@]}") \
    2>&1 | tee "$scratch/holdfast.log"
echo "== running polyplug 0.1.3's rows (log: $scratch/polyplug.log)"
(cd "$scratch/harness" &&
    CARGO_TARGET_DIR="$scratch/target" \
    POLYPLUG_FIXTURES="$scratch/target-fixtures/release" \
    POLYPLUG_BUNDLES="$scratch/bundles" \
    cargo bench --quiet --bench polyplug -- "${criterion_args[@]}") \
    2>&1 | tee "$scratch/polyplug.log"

size() { if [ -f "$1" ]; then wc -c <"$1" | tr -d ' '; else echo "?"; fi; }
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
echo
echo "== holdfast-plugin vs polyplug 0.1.3, $(date -u '+%Y-%m-%d %H:%M UTC')$([ "$quick" = 1 ] && echo ', --quick (smoke check only)')"
echo "rustc:    $(echo "$rustc_repo" | head -n1)"
echo "machine:  $(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -sr)"
echo "holdfast: $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$repo" && git diff --quiet HEAD -- crates 2>/dev/null || echo ' (with uncommitted changes)')"
echo "images:   holdfast reload fixture $(size "$holdfast_target/tmp/fixture-target/release/libreload_plugin_v1.so") bytes, polyplug reload fixture $(size "$scratch/target-fixtures/release/libpolyplug_reload_v1.so") bytes"
echo
"$scratch/target/release/report" --holdfast "$holdfast_target/criterion" --polyplug "$scratch/target/criterion" --since "$since"
echo
echo "Reload pace achieved during the dispatch rows:"
grep -h 'reloads in' "$scratch/holdfast.log" | sed 's/^/  holdfast: /'
grep -h 'reloads in' "$scratch/polyplug.log" | sed 's/^/  polyplug: /'
echo "Took $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s."
