#!/usr/bin/env bash
# Run every fuzz target for a while (default 60 s each) with cargo-fuzz on nightly.
# Not part of CI: it needs a nightly toolchain and minutes of CPU. Findings land in
# fuzz/artifacts/<target>/; add the input that crashed to tests as a regression.
#   scripts/fuzz.sh            # 60 s per target
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh config host
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECONDS_PER_TARGET:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config host connect_target tool_signatures audit_line)
for t in "${targets[@]}"; do
    echo "== $t (${secs}s)"
    # Fuzz a scratch copy so the committed seed corpus only grows when someone chooses to.
    work=$(mktemp -d)
    cp -r "fuzz/corpus/$t/." "$work/"
    cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$secs" -max_len=4096 2>&1 | tail -n 3
    rm -rf "$work"
done
