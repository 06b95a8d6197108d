#!/usr/bin/env bash
# The README's source-tree table names every folder a newcomer meets at the
# top of the tree and under src/ (hidden ones aside: .ci/ is one line), and
# names no folder that is not there.
SRC="${2:-$(cd "$(dirname "$0")/../.." && pwd)}"
exec python3 - "$SRC" <<'PY'
import os, re, subprocess, sys

root = sys.argv[1]
try:   # the tracked tree: build directories and editor droppings do not count
    files = subprocess.run(["git", "-C", root, "ls-files"], check=True,
                           capture_output=True, text=True).stdout.split("\n")
    dirs = {f.split("/")[0] + "/" for f in files if "/" in f and not f.startswith(".")}
    dirs |= {"/".join(f.split("/")[:2]) + "/" for f in files
             if f.startswith("src/") and f.count("/") >= 2}
except (OSError, subprocess.CalledProcessError):
    dirs = {d + "/" for d in os.listdir(root)
            if os.path.isdir(os.path.join(root, d)) and not d.startswith((".", "build"))}
    dirs |= {"src/" + d + "/" for d in os.listdir(os.path.join(root, "src"))
             if os.path.isdir(os.path.join(root, "src", d))}
dirs.discard("src/")   # the table names its folders instead

text = open(os.path.join(root, "README.md"), encoding="utf-8").read()
start = text.index("| folder | what it is |")
table = text[start:text.index("\n\n", start)]
named = set()
for row in table.split("\n")[2:]:
    first = row.split("|")[1]
    named |= set(re.findall(r"`([^`]+/)`", first))

bad = [f"README.md: the source-tree table does not name {d}" for d in sorted(dirs - named)]
bad += [f"README.md: the source-tree table names {d}, which is not in the tree"
        for d in sorted(named - dirs)]
for b in bad:
    print("NOT OK:", b)
print(f"source tree: {len(dirs)} folders, {len(named)} named, {len(bad)} mismatches")
sys.exit(1 if bad else 0)
PY
