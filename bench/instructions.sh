#!/usr/bin/env bash
# Instructions per request of each layer on the memory store, counted by callgrind (valgrind):
# deterministic, unlike wall-clock runs, so a change to the hot path shows as a number. Then
# the peers' caches on a hit (bench/peers, its own workspace), counted the same way.
# Each scenario runs twice (SMALL and SMALL + 10,000 requests); the difference divided by
# 10,000 cancels start-up and shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind is missing; installing it from the OS packages" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --example bench_instructions -q
binary=target/release/examples/bench_instructions
SMALL=1000
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$binary" "$1" "$2" 2>&1 |
    sed -n 's/.*refs: *\([0-9,]*\).*/\1/p' | tr -d ,
}
printf '%-10s %14s %14s\n' scenario "instr/request" "over plain"
plain=""
for scenario in plain plain_layered auth cache uncacheable gcra gcra_bare window cooldown governor; do
  small=$(count "$scenario" "$SMALL")
  large=$(count "$scenario" $((SMALL + 10000)))
  per=$(((large - small) / 10000))
  [ -z "$plain" ] && plain=$per
  printf '%-10s %14d %14d\n' "$scenario" "$per" $((per - plain))
done

# The peers: tower-http-cache (memory backend) and http-cache-tower-server (moka) on a hit,
# over the same page as a service (their bodies must be Sync; axum's handler bodies are not).
# Their `plain` is the crate's own baseline handler, built in their binary, for comparison.
CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release -q --manifest-path bench/peers/Cargo.toml --bin peers_instructions
binary=bench/peers/target/release/peers_instructions
printf '\npeers (over plain_service)\n'
base=""
for scenario in plain plain_service tower_http_cache http_cache_tower_server; do
  small=$(count "$scenario" "$SMALL")
  large=$(count "$scenario" $((SMALL + 10000)))
  per=$(((large - small) / 10000))
  [ "$scenario" = plain_service ] && base=$per
  printf '%-24s %14d %14s\n' "$scenario" "$per" "${base:+$((per - base))}"
done
