#!/usr/bin/env bash
# Runs the criterion suites (all, or those named) and writes benches/results/.
#   benches/run.sh                    every suite
#   benches/run.sh circuit_breaker    one suite
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshwork/target}"
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
  suites=($(ls benches/benches | sed -n 's/\.rs$//p'))
fi
for suite in "${suites[@]}"; do
  cargo bench -p meshwork-benches --bench "$suite"
done
python3 benches/report.py benches/results
