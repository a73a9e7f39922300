#!/usr/bin/env bash
# The whole meshwork test suite, from a fresh machine to a verdict.
#
# It installs what the machine lacks (toolchain components, cargo-nextest, Debian
# packages), starts what the tests need, then runs, in order and stopping at the
# first failure: rustfmt, clippy with warnings denied, the nextest suite, the doc
# tests, rustdoc with warnings denied, and a compile check of the benchmarks.
set -euo pipefail

cd "$(dirname "$0")/.."

# A build cache outside the clone, so a fresh clone (CI) reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshwork/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUSTDOCFLAGS="-D warnings"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
cargo --version
cargo nextest --version | head -n 1

step "services"
bash scripts/services.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo nextest run"
cargo nextest run --workspace --all-features --locked --no-fail-fast

step "cargo test --doc"
cargo test --workspace --all-features --locked --doc

step "cargo doc (warnings denied)"
cargo doc --workspace --all-features --locked --no-deps

step "cargo check --benches"
cargo check --workspace --benches --all-features --locked
