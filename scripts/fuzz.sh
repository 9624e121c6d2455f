#!/usr/bin/env bash
# Long run of the parser fuzzer (tests/fuzz.rs) in a release build:
#
#   scripts/fuzz.sh [SECONDS]        # per target [600]; run from anywhere
#
# Each target (pickle, distcp, safetensors, toml, filter, jsonl, tokenizer) runs for SECONDS,
# two at a time, and prints its counts: inputs, errors, ok, the slowest input. A panic, an input
# over 2 s or an allocation over 1 GiB fails the run; the input is left in target/fuzz-current/.
# FILTERMON_FUZZ_ONLY=pickle,distcp limits the targets.
set -euo pipefail
cd "$(dirname "$0")/.."
FILTERMON_FUZZ_SECS="${1:-600}" exec cargo test --release --test fuzz -- --nocapture fuzz_parsers
