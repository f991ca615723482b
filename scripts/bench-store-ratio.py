#!/usr/bin/env python3
"""Prints the store benchmark's throughput per scenario and its ratio to the multiplexed
baseline, read from criterion's estimates of the last `cargo bench --bench store` run."""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion" / "get_64_tasks"
baseline = "multiplexed_connection"
ops_per_iter = 64


def throughput(name):
    estimates = json.loads((root / name / "new" / "estimates.json").read_text())
    ns = estimates["mean"]["point_estimate"]
    return ops_per_iter / (ns / 1e9)


if not (root / baseline).exists():
    sys.exit("no results: run `cargo bench --bench store` first")
base = throughput(baseline)
print(f"{'scenario':<40} {'ops/s':>12} {'ratio':>7}")
for path in sorted(p for p in root.iterdir() if (p / "new").exists()):
    ops = throughput(path.name)
    print(f"{path.name:<40} {ops:>12.0f} {ops / base:>7.2f}")
