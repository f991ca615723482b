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

# the tables also go to bench/instructions.txt, which bench/report.py puts in BENCHMARKS.md
exec > >(tee bench/instructions.txt)

CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --example bench_instructions -q
binary=target/release/examples/bench_instructions
SMALL=1000
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$binary" "$1" "$2" 2>&1 |
    sed -n 's/.*refs: *\([0-9,]*\).*/\1/p' | tr -d ,
}
printf '%-10s %14s %14s\n' scenario "instr/request" "over plain"
plain=""
declare -A memory
for scenario in plain plain_layered auth cache uncacheable gcra gcra_bare window cooldown governor; do
  small=$(count "$scenario" "$SMALL")
  large=$(count "$scenario" $((SMALL + 10000)))
  per=$(((large - small) / 10000))
  [ -z "$plain" ] && plain=$per
  memory[$scenario]=$per
  printf '%-10s %14d %14d\n' "$scenario" "$per" $((per - plain))
done

# The Redis path: the same layers on a RedisStore (near_: with a near cache) against a
# redis-server of its own on a free port, beside the one-GET floor handler (redis_floor).
# Counted is this process, the client side. Target (issue 31): each layer's cost over the
# floor at most its memory-store cost over plain_layered (1l) plus 1,000.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
export REDIS_URL="redis://127.0.0.1:$port"
printf '\n%-20s %14s %14s %20s\n' "on Redis" "instr/request" "over floor" "target (over floor)"
floor=""
for scenario in redis_floor redis_auth near_auth redis_cache near_cache redis_uncacheable \
  redis_gcra redis_gcra_bare redis_window redis_cooldown; do
  redis-cli -p "$port" flushall >/dev/null
  small=$(count "$scenario" "$SMALL")
  redis-cli -p "$port" flushall >/dev/null
  large=$(count "$scenario" $((SMALL + 10000)))
  per=$(((large - small) / 10000))
  [ -z "$floor" ] && floor=$per
  layer=${scenario#*_}
  target=""
  [ -n "${memory[$layer]:-}" ] && target=$((memory[$layer] - memory[plain_layered] + 1000))
  printf '%-20s %14d %14d %20s\n' "$scenario" "$per" $((per - floor)) "${target:+≤ $target}"
done
kill $redis_pid 2>/dev/null || true

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
