#!/usr/bin/env bash
# A release build tuned by a measured profile (profile-guided optimization),
# of the shipped binary and of the benchmark binary:
#
# 1. builds `deltabook` instrumented (`-Cprofile-generate`), in its own
#    target directory (the flags differ, so the usual build is untouched);
# 2. books training streams with it: `deltabook generate` with seeds 7 and 8
#    (the benchmarks use 42), 1k and 100k positions, 300k lines each, with
#    1 and 2 workers, and once with LIFO and HIFO accounts;
# 3. merges the profile with `llvm-profdata` (rustup's `llvm-tools`
#    component; added when missing);
# 4. builds both binaries with `-Cprofile-use` (fat LTO, the release
#    profile), same sources, same outputs.
#
# Nothing else changes: the usual `cargo build --release` stays the
# default build, tests and CI do not use this. Takes 22-25 minutes on two
# cores (three fat-LTO builds).
#
# Usage: scripts/pgo-build.sh      prints the two binaries' paths at the end
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
WORK="$ROOT/target/pgo"
GENERATE_TARGET="$WORK/generate"
USE_TARGET="$WORK/use"
RAW="$WORK/raw"
PROFILE="$WORK/merged.profdata"
TRAINING="$WORK/training"

host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    rustup component add llvm-tools
fi

echo "== 1. instrumented build"
rm -rf "$RAW"
CARGO_TARGET_DIR="$GENERATE_TARGET" RUSTFLAGS="-Cprofile-generate=$RAW" \
    cargo build --release --locked --bin deltabook
trainer="$GENERATE_TARGET/release/deltabook"

echo "== 2. training runs"
mkdir -p "$TRAINING"
for spec in "7 1000" "8 100000"; do
    read -r seed positions <<< "$spec"
    stream="$TRAINING/train-$seed-${positions}p.jsonl"
    [ -s "$stream" ] || "$trainer" generate --seed "$seed" --positions "$positions" \
        --trades 300000 --out "$stream"
    for workers in 1 2; do
        "$trainer" book --trades "$stream" --workers "$workers" --batch-size 10000 \
            --out "$TRAINING/out" > /dev/null
    done
done
printf '{"ACC1":"LIFO","ACC2":"HIFO","ACC3_EQ-US":"HIFO"}\n' > "$TRAINING/methods.json"
"$trainer" book --trades "$TRAINING/train-7-1000p.jsonl" --methods "$TRAINING/methods.json" \
    --workers 2 --out "$TRAINING/out" > /dev/null

echo "== 3. merged profile"
"$profdata" merge -o "$PROFILE" "$RAW"

echo "== 4. optimized builds"
export CARGO_TARGET_DIR="$USE_TARGET"
export RUSTFLAGS="-Cprofile-use=$PROFILE"
cargo build --release --locked --bin deltabook
bench="$(cargo bench --bench deltabook --no-run --locked --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
echo "shipped binary: $USE_TARGET/release/deltabook"
echo "bench binary:   $bench"
