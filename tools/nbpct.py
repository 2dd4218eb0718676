#!/usr/bin/env python3
"""Convert notebooks to and from a plain-text percent format for editing.

The notebooks in nbs/ and research/ are the source of truth. This tool only makes them easy to
edit as text: `nbpct.py to-pct nbs/10_data.ipynb > /tmp/10_data.pct.py`, edit, then
`nbpct.py to-nb /tmp/10_data.pct.py nbs/10_data.ipynb`, then `nbdev-clean` and `nbdev-export`.

Format: a line `# %%` starts a code cell, `# %% [markdown]` a markdown cell whose lines are
prefixed with `# `, and `# %% tags=["parameters"]` a code cell with tags.
"""
import hashlib, json, re, sys
from pathlib import Path

HEADER = re.compile(r'^# %%(?: \[(?P<kind>markdown)\])?(?: tags=(?P<tags>\[.*\]))?\s*$')


def to_nb(text: str) -> dict:
    cells, cur = [], None
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            cur = {"kind": "markdown" if m["kind"] else "code", "tags": json.loads(m["tags"]) if m["tags"] else None, "lines": []}
            cells.append(cur)
            continue
        if cur is None:
            continue
        cur["lines"].append(line)
    out = []
    for c in cells:
        lines = c["lines"]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if c["kind"] == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln[1:] if ln.startswith("#") else ln for ln in lines]
        src = [ln + "\n" for ln in lines]
        if src:
            src[-1] = src[-1][:-1]
        meta = {"tags": c["tags"]} if c["tags"] else {}
        # a stable id per position and content, so re-converting an unchanged cell keeps its id
        cid = hashlib.sha1(f"{len(out)}:{''.join(src)}".encode()).hexdigest()[:8]
        cell = {"cell_type": c["kind"], "id": cid, "metadata": meta, "source": src}
        if c["kind"] == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def to_pct(nb: dict) -> str:
    parts = []
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        tags = c.get("metadata", {}).get("tags")
        head = "# %%" + (" [markdown]" if c["cell_type"] == "markdown" else "") + (f" tags={json.dumps(tags)}" if tags else "")
        if c["cell_type"] == "markdown":
            src = "\n".join(("# " + ln) if ln else "#" for ln in src.split("\n"))
        parts.append(head + "\n" + src + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    cmd, src = sys.argv[1], Path(sys.argv[2])
    if cmd == "to-nb":
        dst = Path(sys.argv[3])
        dst.write_text(json.dumps(to_nb(src.read_text()), indent=1, ensure_ascii=False) + "\n")
    elif cmd == "to-pct":
        sys.stdout.write(to_pct(json.loads(src.read_text())))
    else:
        sys.exit("usage: nbpct.py to-nb FILE.pct.py OUT.ipynb | to-pct NB.ipynb")
