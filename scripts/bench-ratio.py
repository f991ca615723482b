#!/usr/bin/env python3
"""Prints each scenario of a criterion benchmark group as throughput and as a ratio to a
baseline scenario of the same run, from criterion's estimates under target/criterion.

usage: scripts/bench-ratio.py GROUP BASELINE
  e.g. scripts/bench-ratio.py get_64_tasks multiplexed_connection   (cargo bench --bench store)
       scripts/bench-ratio.py auth_64_tasks handwritten_redis_get    (cargo bench --bench auth)
"""
import json
import pathlib
import sys

OPS_PER_ITER = 64  # every scenario runs 64 concurrent operations per iteration

if len(sys.argv) != 3:
    sys.exit(__doc__)
group, baseline = sys.argv[1], sys.argv[2]
root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion" / group


def throughput(name):
    estimates = json.loads((root / name / "new" / "estimates.json").read_text())
    return OPS_PER_ITER / (estimates["mean"]["point_estimate"] / 1e9)


if not (root / baseline / "new").exists():
    sys.exit(f"no results for {group}/{baseline}: run the benchmark first")
base = throughput(baseline)
print(f"{'scenario':<40} {'ops/s':>12} {'ratio':>7}")
for path in sorted(p for p in root.iterdir() if (p / "new").exists()):
    ops = throughput(path.name)
    print(f"{path.name:<40} {ops:>12.0f} {ops / base:>7.2f}")
