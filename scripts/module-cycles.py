#!/usr/bin/env python3
"""Import cycles between the modules of src/ (file level), for the test suite.

An edge A -> B is a `use` of, or a path through, module B in module A's file, outside
`#[cfg(test)]` blocks. Re-exports (`pub use`, `pub(crate) use`) of a module's own children are a
facade, not a dependency, and are left out. Prints each cycle and exits 1 if there is one.
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


files = {}
for d, _, fs in os.walk(ROOT):
    for f in fs:
        if f.endswith(".rs") and f != "main.rs":
            files[module_of(os.path.join(d, f))] = os.path.join(d, f)


def strip_tests(text):
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod \w+ \{", text):
        out.append(text[i:m.start()])
        depth, j = 0, m.end() - 1
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        i = j
    out.append(text[i:])
    return "".join(out)


def resolve(mod, parts):
    """The longest prefix of `parts` (absolute) that is a module."""
    for n in range(len(parts), 0, -1):
        if tuple(parts[:n]) in files:
            return tuple(parts[:n])
    return ()


def paths(mod, text):
    text = re.sub(r"//[^\n]*", "", strip_tests(text))
    for stmt in re.finditer(r"(pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);", text):
        facade = stmt.group(1) is not None
        body = re.sub(r"\s+", "", stmt.group(2))
        for p in expand(body):
            yield p, facade
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        yield m.group(1).split("::"), False


def expand(body):
    m = re.match(r"^(.*?)\{(.*)\}$", body)
    if not m:
        return [body.split("::")]
    head = m.group(1).rstrip(":").split("::") if m.group(1) else []
    items, depth, cur = [], 0, ""
    for c in m.group(2):
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += (c == "{") - (c == "}")
        cur += c
    items.append(cur)
    out = []
    for it in filter(None, items):
        out += [head + p for p in expand(it)]
    return out


def absolute(mod, parts):
    if parts[0] == "crate":
        return parts[1:]
    if parts[0] in ("super", "self"):
        base = list(mod)
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        return base + parts
    return None


edges = {m: set() for m in files}
for mod, path in files.items():
    for parts, facade in paths(mod, open(path).read()):
        abs_parts = absolute(mod, parts)
        if abs_parts is None:
            continue
        target = resolve(mod, abs_parts)
        if not target or target == mod:
            continue
        if facade and target[: len(mod)] == mod:
            continue  # a re-export of one's own child
        edges[mod].add(target)

# Cycles: Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)


sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index:
        strong(v)
name = lambda m: "::".join(m) or "crate"
for comp in sccs:
    members = set(comp)
    print("cycle:", ", ".join(sorted(name(m) for m in comp)))
    for m in sorted(comp):
        for t in sorted(edges[m] & members):
            print(f"  {name(m)} -> {name(t)}")
sys.exit(1 if sccs else 0)
