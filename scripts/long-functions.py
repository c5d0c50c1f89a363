#!/usr/bin/env python3
"""Functions in src/ longer than LIMIT lines (default 80), for the test suite: prints each and
exits 1 if there is one."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 80
found = []
for root, _, files in os.walk(ROOT):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        lines = open(path).read().split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"\s*(pub(\([a-z]+\))? )?(async )?fn (\w+)", line)
            if not m or line.rstrip().endswith(";"):
                continue
            depth, started, j = 0, False, i
            for j in range(i, len(lines)):
                depth += lines[j].count("{") - lines[j].count("}")
                started = started or "{" in lines[j]
                if started and depth <= 0:
                    break
            if j - i + 1 > LIMIT:
                found.append(f"{os.path.relpath(path, os.path.dirname(ROOT))}:{i + 1} {m.group(4)}: {j - i + 1} lines")
print("\n".join(found))
sys.exit(1 if found else 0)
