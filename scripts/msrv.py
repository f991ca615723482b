#!/usr/bin/env python3
"""Checks the declared MSRV (`rust-version` in Cargo.toml) against what this machine can tell.

Only the installed toolchain exists here, so the MSRV cannot be built with. What can be checked:
- no dependency the library builds with (any feature) declares a `rust-version` newer than
  ours: the declared MSRV would then be a promise the dependencies break;
- clippy's `incompatible_msrv` lint (in `clippy::all`, run by `.ci/run` with `-D warnings`)
  reads the same `rust-version` and refuses standard-library items stabilized after it.
Language features newer than the MSRV are not caught by either; the MSRV is set no lower than
the newest dependency's, which needs that compiler anyway.
"""
import json
import subprocess
import sys


def version(text):
    return tuple(int(part) for part in text.split("."))


metadata = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
ours = next(p for p in metadata["packages"] if p["id"] in metadata["workspace_members"])
declared = ours.get("rust_version")
if not declared:
    sys.exit("Cargo.toml declares no rust-version")

# the packages the library itself builds with: normal dependencies, every feature on
tree = subprocess.run(
    ["cargo", "tree", "-e", "normal", "--all-features", "--prefix", "none", "--format", "{p}"],
    check=True,
    capture_output=True,
    text=True,
).stdout
normal = {line.split(" (")[0].strip().replace(" v", "@", 1) for line in tree.splitlines() if line.strip()}

newer = sorted(
    (p["name"], p["version"], p["rust_version"])
    for p in metadata["packages"]
    if f"{p['name']}@{p['version']}" in normal
    and p.get("rust_version")
    and version(p["rust_version"]) > version(declared)
)
if newer:
    for name, ver, needs in newer:
        print(f"{name} {ver} needs Rust {needs}", file=sys.stderr)
    sys.exit(f"rust-version {declared} is older than what the dependencies above need")
newest = max(
    (version(p["rust_version"]), p["rust_version"])
    for p in metadata["packages"]
    if f"{p['name']}@{p['version']}" in normal and p.get("rust_version")
)
print(f"rust-version {declared}: no dependency needs newer (newest declared: {newest[1]})")
