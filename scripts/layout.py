#!/usr/bin/env python3
"""The source layout rules of shared/STYLE.md, checked (issue 30, point 6).

- No import circle between sibling files of a folder, other than layer <-> service (a
  circle leaves a folder without a bottom to start reading from).
- No source file over 800 lines before its tests.
- No function over 100 lines.

`python3 scripts/layout.py` prints every breach and exits 1 if there is one (`.ci/run` runs
it); `--report` prints them and exits 0; `--edges` also
prints, for each circle, which of its files each member imports.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
MAX_FILE_LINES = 800
MAX_FN_LINES = 100
ALLOWED_CIRCLES = [{"layer", "service"}]

FN_START = re.compile(
    r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)"
)


def code_lines(path):
    """The file's lines before its `#[cfg(test)]` module."""
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]" and n + 1 < len(lines) and "mod " in lines[n + 1]:
            return lines[:n]
    return lines


def without_comments(lines):
    """The lines with `//` comments cut: an intra-doc link to a module above is no import."""
    return [re.sub(r"//.*$", "", line) for line in lines]


def module_name(path):
    return path.parent.name if path.name == "mod.rs" else path.stem


def siblings(folder):
    """The modules of `folder` (files and subfolders), by name, to their files."""
    modules = {}
    for path in folder.iterdir():
        if path.is_file() and path.suffix == ".rs" and path.name not in ("mod.rs", "lib.rs"):
            modules[path.stem] = [path]
        elif path.is_dir() and (path / "mod.rs").exists():
            modules[path.name] = sorted(path.rglob("*.rs"))
    return modules


def crate_path(folder):
    parts = folder.relative_to(ROOT).parts
    return "crate::" + "::".join(parts) + "::" if parts else "crate::"


def reexports(folder):
    """The names the folder's `mod.rs` (or `lib.rs`) re-exports from its modules: `super::Name`
    in a sibling reaches the module `Name` comes from."""
    index = folder / ("lib.rs" if folder == ROOT else "mod.rs")
    names = {}
    text = "\n".join(code_lines(index))
    for module, body in re.findall(r"use\s+self::(\w+)::(\{[^;]*\}|[\w:]+)\s*;", text, re.S):
        for name in re.findall(r"\b(\w+)\b(?:\s+as\s+(\w+))?", body.strip("{}")):
            names[name[1] or name[0]] = module
    return names


def circles(folder):
    modules = siblings(folder)
    prefix = crate_path(folder)
    exported = {name: module for name, module in reexports(folder).items() if module in modules}
    edges = {name: set() for name in modules}
    for name, files in modules.items():
        for path in files:
            # a file in a subfolder reaches its folder's siblings through `super::super::`
            depth = len(path.relative_to(folder).parts) - 1
            if path.name == "mod.rs":
                depth -= 1
            up = "super::" * (depth + 1)
            text = "\n".join(without_comments(code_lines(path)))
            for other in modules:
                if other == name:
                    continue
                # the module by name, or a name its folder re-exports from it
                for target in [other] + [n for n, m in exported.items() if m == other]:
                    pattern = r"(\b{0}{1}\b|{2}{1}\b)".format(
                        re.escape(up), re.escape(target), re.escape(prefix)
                    )
                    grouped = r"(\b{0}|{1})\{{[^}}]*\b{2}\b".format(
                        re.escape(up), re.escape(prefix), re.escape(target)
                    )
                    if re.search(pattern, text) or re.search(grouped, text, re.S):
                        edges[name].add(other)
                        break
    found = strongly_connected(edges)
    if "--edges" in sys.argv:
        for circle in found:
            for name in circle:
                inside = sorted(edges[name] & set(circle))
                print(f"  {folder.relative_to(ROOT.parent)}: {name} -> {', '.join(inside)}")
    return found


def strongly_connected(edges):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 and component not in ALLOWED_CIRCLES:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in edges:
        if node not in index:
            visit(node)
    return found


def long_functions(path):
    lines = code_lines(path)
    found = []
    for n, line in enumerate(lines):
        match = FN_START.match(line)
        if not match or line.rstrip().endswith(";"):
            continue
        depth, started, end = 0, False, None
        for m in range(n, len(lines)):
            for ch in lines[m]:
                if ch == "{":
                    depth += 1
                    started = True
                elif ch == "}":
                    depth -= 1
            if started and depth == 0:
                end = m
                break
            if not started and lines[m].rstrip().endswith(";"):
                break
        if end is not None and end - n + 1 > MAX_FN_LINES:
            found.append((match.group(7), n + 1, end - n + 1))
    return found


def main():
    report = "--report" in sys.argv
    breaches = []
    folders = [ROOT] + sorted(p for p in ROOT.rglob("*") if p.is_dir() and (p / "mod.rs").exists())
    for folder in folders:
        for circle in circles(folder):
            breaches.append(f"circle in {folder.relative_to(ROOT.parent)}: {' <-> '.join(circle)}")
    for path in sorted(ROOT.rglob("*.rs")):
        lines = len(code_lines(path))
        rel = path.relative_to(ROOT.parent)
        if lines > MAX_FILE_LINES:
            breaches.append(f"{rel}: {lines} lines before its tests (at most {MAX_FILE_LINES})")
        for name, line, length in long_functions(path):
            breaches.append(f"{rel}:{line}: fn {name} is {length} lines (at most {MAX_FN_LINES})")
    for breach in breaches:
        print(breach)
    if breaches and not report:
        print(f"{len(breaches)} layout breaches (shared/STYLE.md, layout)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
