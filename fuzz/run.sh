#!/usr/bin/env bash
# Build the libFuzzer target for the C line splitter and run it for a while.
#
#   fuzz/run.sh                 # 60 seconds
#   FUZZ_SECONDS=3600 fuzz/run.sh
#   fuzz/run.sh -jobs=2 -workers=2   # extra arguments go to libFuzzer
#
# Exits non-zero when the fuzzer finds a crash (its input is saved under fuzz/work/artifacts/)
# or when the target cannot be built. Needs clang with libFuzzer (Debian: apt-get install clang).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
work="${FUZZ_WORKDIR:-$here/work}"
cc="${CC_FUZZ:-clang}"

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz/run.sh: $cc not found (apt-get install clang)" >&2
    exit 2
fi

mkdir -p "$work/corpus" "$work/artifacts"
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -Wall -Wextra -I"$root/csrc" \
    "$here/fuzz_lines.c" "$root/csrc/lines.c" -o "$work/fuzz_lines"

# New inputs go to the first corpus directory (work/corpus), so the committed seeds in
# fuzz/corpus stay as they are.
exec "$work/fuzz_lines" \
    -max_total_time="${FUZZ_SECONDS:-60}" \
    -max_len=4096 \
    -timeout=10 \
    -artifact_prefix="$work/artifacts/" \
    -print_final_stats=1 \
    "$@" \
    "$work/corpus" "$here/corpus"
