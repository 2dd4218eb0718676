#!/usr/bin/env python3
"""Run a command and fail if it changed any file under the given folders.

`python tools/unchanged.py nbs research -- nbdev-clean` proves the notebooks were already clean;
`python tools/unchanged.py trade_matrix -- nbdev-export` proves the package matches the notebooks.
Works on a dirty working tree too (it compares file contents before and after, not against git).
"""
import hashlib, subprocess, sys
from pathlib import Path


def snapshot(dirs):
    out = {}
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


if __name__ == "__main__":
    sep = sys.argv.index("--")
    dirs, cmd = sys.argv[1:sep], sys.argv[sep + 1:]
    before = snapshot(dirs)
    rc = subprocess.call(cmd)
    if rc:
        sys.exit(rc)
    after = snapshot(dirs)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"FAIL: `{' '.join(cmd)}` changed {len(changed)} file(s); commit the result:")
        for c in changed:
            print("   ", c)
        sys.exit(1)
    print(f"ok: `{' '.join(cmd)}` left {', '.join(dirs)} unchanged")
