#!/usr/bin/env bash
# Load benchmarks: every scenario of bench/server.rs driven by wrk over loopback, interleaved
# (round 1: A B C ..., round 2: A B C ...), then BENCHMARKS.md and bench/ratios.svg written by
# bench/report.py. Starts its own redis-server and benchmark server, and stops them at the end.
#
# Settings (environment): ROUNDS (3), DURATION seconds per run (4), CONNECTIONS (64), THREADS (2),
# PIN (0; 1 pins the benchmark server to CPU 0 and wrk to CPU 1, which makes runs on a
# two-core machine quieter at the cost of the server's second core: compare pinned runs only
# with pinned runs).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PIN=${PIN:-0}
export PIN
server_cpu=()
wrk_cpu=()
if [ "$PIN" = 1 ]; then
  command -v taskset >/dev/null 2>&1 || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
  server_cpu=(taskset -c 0)
  wrk_cpu=(taskset -c 1)
fi

install() {
  local package=$1
  echo "$package is missing; installing it from the OS packages" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}
command -v wrk >/dev/null 2>&1 || install wrk
command -v redis-server >/dev/null 2>&1 || install redis-server
command -v redis-cli >/dev/null 2>&1 || install redis-tools

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

workdir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

echo "== building the benchmark server and the peers' server (release)"
cargo build --release --example bench_server -q
# the peers live in a crate of their own, so that their dependencies stay out of this one
cargo build --release -q --manifest-path bench/peers/Cargo.toml

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$workdir" >/dev/null &
pids+=($!)
redis_pid=$!
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

# A Redis Cluster of three masters (no replicas: like the single Redis, nothing else copies
# the writes), each with an explicit cluster bus port: the default, port + 10000, may be taken.
echo "== starting a 3-master Redis Cluster"
cluster_ports=()
cluster_buses=()
redis_pids=("$redis_pid")
for i in 0 1 2; do
  port=$(free_port); bus=$(free_port)
  mkdir -p "$workdir/cluster-$i"
  redis-server --port "$port" --cluster-port "$bus" --cluster-enabled yes \
    --cluster-config-file "$workdir/cluster-$i/nodes.conf" --cluster-node-timeout 1000 \
    --bind 127.0.0.1 --save "" --appendonly no --dir "$workdir/cluster-$i" >/dev/null &
  pids+=($!)
  redis_pids+=($!)
  cluster_ports+=("$port")
  cluster_buses+=("$bus")
done
for port in "${cluster_ports[@]}"; do
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
slots=("0 5460" "5461 10922" "10923 16383")
for i in 0 1 2; do
  redis-cli -p "${cluster_ports[$i]}" CLUSTER SET-CONFIG-EPOCH $((i + 1)) >/dev/null
  # shellcheck disable=SC2086 # the range is two words
  redis-cli -p "${cluster_ports[$i]}" CLUSTER ADDSLOTSRANGE ${slots[$i]} >/dev/null
done
for i in 1 2; do
  redis-cli -p "${cluster_ports[0]}" CLUSTER MEET 127.0.0.1 "${cluster_ports[$i]}" "${cluster_buses[$i]}" >/dev/null
done
for _ in $(seq 1 200); do
  ok=yes
  for port in "${cluster_ports[@]}"; do
    redis-cli -p "$port" CLUSTER INFO | grep -q cluster_state:ok || ok=no
  done
  [ "$ok" = yes ] && break
  sleep 0.05
done
[ "$ok" = yes ] || { echo "the benchmark cluster did not come up" >&2; exit 1; }
cluster_seeds=$(printf 'redis://127.0.0.1:%s,' "${cluster_ports[@]}")

server_port=$(free_port)
REDIS_URL="redis://127.0.0.1:$redis_port" REDIS_CLUSTER="${cluster_seeds%,}" ADDR="127.0.0.1:$server_port" "${server_cpu[@]}" target/release/examples/bench_server >/dev/null &
pids+=($!)
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$server_port/plain" >/dev/null 2>&1 && break; sleep 0.05; done
base="http://127.0.0.1:$server_port"
peers_port=$(free_port)
REDIS_URL="redis://127.0.0.1:$redis_port" ADDR="127.0.0.1:$peers_port" "${server_cpu[@]}" bench/peers/target/release/tower-redis-http-peers >/dev/null &
pids+=($!)
peers_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$peers_port/plain" >/dev/null 2>&1 && break; sleep 0.05; done
peers_base="http://127.0.0.1:$peers_port"
# a path starting with @peers is served by the peers' server (bench/peers)
url_of() { case "$1" in @peers*) echo "$peers_base${1#@peers}" ;; *) echo "$base$1" ;; esac; }
pid_of() { case "$1" in @peers*) echo "$peers_pid" ;; *) echo "$server_pid" ;; esac; }
auth="Authorization: Bearer bench-token-0123456789abcdef"

# name | path | needs the token | unique path per request | GETs Redis runs inside a script or
# transaction per request (counted by INFO commandstats, though they cross no network) | what
# Cache-Status must say before the scenario is timed (hit, miss, or - for no cache)
scenarios=(
  "plain|/plain|no|no|0|-"
  "plain_unique|/plain/{n}|no|yes|0|-"
  "plain_layered|/plain-layered|no|no|0|-"
  "floor|/floor|yes|no|0|-"
  "floor_unique|/floor/{n}|yes|yes|0|-"
  "auth_redis|/auth/redis|yes|no|0|-"
  "auth_memory|/auth/memory|yes|no|0|-"
  "cache_hit_redis|/cache/redis|no|no|0|hit"
  "cache_hit_memory|/cache/memory|no|no|0|hit"
  "cache_miss_redis|/cache-miss/redis/{n}|no|yes|3|stored"
  "cache_uncacheable_redis|/cache-uncacheable/redis|yes|no|0|miss"
  "cache_uncacheable_memory|/cache-uncacheable/memory|yes|no|0|miss"
  "rl_cooldown_redis|/rl/cooldown/redis/{n}|no|yes|1|-"
  "rl_cooldown_memory|/rl/cooldown/memory/{n}|no|yes|0|-"
  "rl_window_redis|/rl/window/redis|no|no|0|-"
  "rl_window_memory|/rl/window/memory|no|no|0|-"
  "rl_gcra_redis|/rl/gcra/redis|no|no|1|-"
  "rl_gcra_memory|/rl/gcra/memory|no|no|0|-"
  "rl_gcra_memory_bare|/rl/gcra/memory-bare|no|no|0|-"
  "rl_tower_governor|/rl/governor|no|no|0|-"
  "full_stack_redis|/full/redis|yes|no|1|hit"
  "near_auth|/near/auth|yes|no|0|-"
  "near_cache_hit|/near/cache|no|no|0|hit"
  "near_full_stack|/near/full|yes|no|1|hit"
  "peers_plain|@peers/plain|no|no|0|-"
  "peer_tower_http_cache_memory|@peers/peers/tower-http-cache/memory|no|no|0|-"
  "peer_tower_http_cache_redis|@peers/peers/tower-http-cache/redis|no|no|0|-"
  "peer_http_cache_tower_server_moka|@peers/peers/http-cache-tower-server/moka|no|no|0|-"
  "cluster_floor|/cluster/floor|yes|no|0|-"
  "cluster_floor_unique|/cluster/floor/{n}|yes|yes|0|-"
  "cluster_auth|/cluster/auth|yes|no|0|-"
  "cluster_cache_hit|/cluster/cache|no|no|0|hit"
  "cluster_rl_cooldown|/cluster/rl/cooldown/{n}|no|yes|1|-"
  "cluster_rl_window|/cluster/rl/window|no|no|0|-"
  "cluster_rl_gcra|/cluster/rl/gcra|no|no|1|-"
)

# warm the cache entries so the hit scenarios measure hits
curl -s "$base/cache/redis" >/dev/null; curl -s "$base/cache/memory" >/dev/null
curl -s -H "$auth" "$base/full/redis" >/dev/null
curl -s "$base/near/cache" >/dev/null; curl -s -H "$auth" "$base/near/full" >/dev/null
curl -s "$base/cluster/cache" >/dev/null
sleep 0.5

# Each scenario must be what its name says before it is timed: a hit scenario that does not
# hit, or an uncacheable one that stores, fails the run.
for entry in "${scenarios[@]}"; do
  IFS='|' read -r name path token unique scripted expect <<<"$entry"
  [ "$expect" = - ] && continue
  headers=()
  [ "$token" = yes ] && headers=(-H "$auth")
  status=$(curl -s -o /dev/null -D - "${headers[@]}" "$base${path//\{n\}/check-$RANDOM}" |
    tr -d '\r' | sed -n 's/^cache-status: //Ip')
  case "$expect" in
    hit) [[ "$status" == *"; hit"* ]] ;;
    stored) [[ "$status" == *"; detail=storing"* ]] ;;
    miss) [[ "$status" == *"fwd="* && "$status" != *"storing"* ]] ;;
  esac || { echo "$name is not what its name says: Cache-Status: ${status:-none}" >&2; exit 1; }
done

# The peers' cache scenarios must hit once warm: their handlers do not run again.
for path in /peers/tower-http-cache/memory /peers/tower-http-cache/redis /peers/http-cache-tower-server/moka; do
  curl -s -o /dev/null "$peers_base$path"; curl -s -o /dev/null "$peers_base$path"
done
before=$(curl -s "$peers_base/runs")
for path in /peers/tower-http-cache/memory /peers/tower-http-cache/redis /peers/http-cache-tower-server/moka; do
  for _ in $(seq 1 20); do curl -s -o /dev/null "$peers_base$path"; done
done
after=$(curl -s "$peers_base/runs")
[ "$before" = "$after" ] || { echo "a peer's cache did not hit: handler runs went from [$before] to [$after]" >&2; exit 1; }

# The GCRA scenarios must differ only in the informational fields: with them, RateLimit is
# sent; without them (the work tower_governor does), it is not.
curl -s -D - -o /dev/null "$base/rl/gcra/memory" | tr -d '\r' | grep -qi '^ratelimit:' ||
  { echo "rl_gcra_memory sends no RateLimit field" >&2; exit 1; }
if curl -s -D - -o /dev/null "$base/rl/gcra/memory-bare" | tr -d '\r' | grep -qi '^ratelimit'; then
  echo "rl_gcra_memory_bare sends RateLimit fields" >&2; exit 1
fi

# The near-cache scenarios must be served from process memory once warm: no GET reaches
# Redis for them.
gets() { redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p'; }
for path in /near/auth /near/cache; do
  curl -s -H "$auth" "$base$path" >/dev/null
  before=$(gets)
  for _ in $(seq 1 20); do curl -s -o /dev/null -H "$auth" "$base$path"; done
  after=$(gets)
  [ "$before" = "$after" ] || { echo "$path is not served from the near cache: $((after - before)) GETs for 20 requests" >&2; exit 1; }
done
# A token revoked by another client (redis-cli, as another instance would) is refused by the
# near cache within 50 ms; the time includes curl's own start.
revoked="Authorization: Bearer bench-revoked-0123456789abcdef"
for _ in 1 2; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$revoked" "$base/near/auth")" = 200 ] ||
    { echo "the token to revoke is not accepted before its revocation" >&2; exit 1; }
done
revoked_at=$(date +%s%N)
redis-cli -p "$redis_port" DEL ":1:bench-revoked-0123456789abcdef" >/dev/null
until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$revoked" "$base/near/auth")" = 401 ]; do
  [ $(( ($(date +%s%N) - revoked_at) / 1000000 )) -lt 1000 ] ||
    { echo "the near cache still accepts a token revoked 1 s ago" >&2; exit 1; }
done
revocation_ms=$(( ($(date +%s%N) - revoked_at) / 1000000 ))
[ "$revocation_ms" -lt 50 ] || { echo "the near cache refused a revoked token only after $revocation_ms ms" >&2; exit 1; }
echo "== a revocation by another client was refused by the near cache after $revocation_ms ms"
export REVOCATION_MS=$revocation_ms

# the round trips every Redis (the single one and the cluster's nodes) counted so far
calls() {
  for port in "$redis_port" "${cluster_ports[@]}"; do
    redis-cli -p "$port" INFO commandstats
  done | tr -d '\r' | python3 -c '
import sys
wanted = {"get", "getex", "evalsha", "eval", "exec"}
total = 0
for line in sys.stdin:
    if line.startswith("cmdstat_"):
        name, rest = line[len("cmdstat_"):].split(":", 1)
        if name in wanted:
            total += int(rest.split("calls=")[1].split(",")[0])
print(total)'
}

# CPU time (user + system, in clock ticks) the processes have used so far
ticks() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | awk '{s += $1} END {print s}'; }
hz=$(getconf CLK_TCK)

results=bench/results.tsv
printf 'scenario\tround\trequests\trps\tp50_ms\tp99_ms\tredis_calls\tscripted_gets\tserver_cpu_s\tredis_cpu_s\n' >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for entry in "${scenarios[@]}"; do
    IFS='|' read -r name path token unique scripted expect <<<"$entry"
    args=(-t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency)
    [ "$token" = yes ] && args+=(-H "$auth")
    url=$(url_of "${path//\{n\}/0}")
    timed_pid=$(pid_of "$path")
    if [ "$unique" = yes ]; then
      args+=(-s bench/unique.lua)
      export BENCH_PATH="$path"
    fi
    before=$(calls); server_before=$(ticks "$timed_pid"); redis_before=$(ticks "${redis_pids[@]}")
    out=$("${wrk_cpu[@]}" wrk "${args[@]}" "$url")
    after=$(calls); server_after=$(ticks "$timed_pid"); redis_after=$(ticks "${redis_pids[@]}")
    python3 - "$name" "$round" "$((after - before))" "$scripted" "$out" \
      "$((server_after - server_before))" "$((redis_after - redis_before))" "$hz" >>"$results" <<'PY'
import re, sys
name, rnd, calls, scripted, out, server_ticks, redis_ticks, hz = sys.argv[1:9]
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
requests = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errors:
    sys.exit(f"{name}: {errors.group(1)} failed responses")
server_cpu, redis_cpu = int(server_ticks) / int(hz), int(redis_ticks) / int(hz)
print(f"{name}\t{rnd}\t{requests}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{calls}\t{scripted}\t{server_cpu}\t{redis_cpu}")
PY
    printf '  round %s  %-20s %s\n' "$round" "$name" "$(tail -n 1 "$results" | cut -f4) req/s"
  done
done

python3 bench/report.py "$results" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS"
echo "== BENCHMARKS.md and bench/ratios.svg written"
