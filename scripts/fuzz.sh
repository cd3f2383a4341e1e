#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for FUZZ_SECS seconds each (libFuzzer
# through cargo-fuzz, on the nightly toolchain with AddressSanitizer).
# New inputs go to target/fuzz-corpus/<target> (the seeds in fuzz/corpus/
# are read, never written); a crash stops the run with the reproducer's
# path (fuzz/artifacts/<target>/), which becomes a regression test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${FUZZ_SECS:-30}
# Read in full before matching (a `| grep -q` under pipefail can fail on SIGPIPE).
toolchains=$(rustup toolchain list)
if [[ $'\n'$toolchains != *$'\n'nightly* ]]; then
  echo "fuzz: no nightly Rust toolchain (cargo-fuzz needs one: rustup toolchain install nightly)" >&2
  exit 2
fi
fuzz_bin="$root/.tools/cargo-fuzz/bin"
if [ ! -x "$fuzz_bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into .tools/cargo-fuzz"
  cargo install --locked --quiet --root "$root/.tools/cargo-fuzz" cargo-fuzz
fi
export PATH="$fuzz_bin:$PATH"
cd "$root"
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
for t in $targets; do
  mkdir -p "target/fuzz-corpus/$t"
  echo "fuzz: $t for ${secs}s"
  log="target/fuzz-corpus/$t.log"
  if cargo +nightly fuzz run "$t" "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^Done [0-9]+ runs' "$log" || tail -3 "$log"
  else
    tail -60 "$log" >&2
    echo "fuzz: $t FAILED; reproducer under fuzz/artifacts/$t/ (log: $log)" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${secs}s with no crash: $targets" | tr '\n' ' '
echo
