"""Hostile data (issue 19, items 1-4): destructive paths, damaged versions, flipped bits.

- `export-lerobot --overwrite` replaces only an earlier export, never the workspace, a folder
  inside it, an unrelated folder or a file;
- a damaged newest layer version never makes garbage collection delete the good older one;
- a flipped bit that makes the RRD decoder panic (abort the process) is a named per-file
  problem in `verify` and `import`, which survive it;
- every file the workspace writes gets a checksum (workspace manifest) that `verify` checks
  and `import` records, so a flip that still decodes is caught.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from roboloop import curate
from roboloop.interop import LeRobotFormatError, export_lerobot


def _tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (what must survive a refused command)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# --- 1. export-lerobot --overwrite ------------------------------------------------------------

def test_export_overwrite_refuses_everything_but_an_earlier_export(tmp_path, catalog, synthetic_episode):
    ws = catalog.workspace
    _, p = synthetic_episode(ws, "src", "ep-0", duration_s=0.5)
    catalog.register_files("src", [p])
    curate.save(catalog, curate.select(catalog, "src"), "s")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    before_ws, before_other = _tree_digest(ws.root), _tree_digest(other)
    targets = {
        ws.root: "holds the roboloop workspace",
        tmp_path: "holds the roboloop workspace",  # a parent of the workspace
        ws.datasets_dir: "inside the roboloop workspace",
        ws.layer_dir("src", "base"): "inside the roboloop workspace",
        other: "not an earlier roboloop export",
        plain: "is a file",
    }
    for target, why in targets.items():
        with pytest.raises(LeRobotFormatError, match=why) as exc:
            export_lerobot(catalog, "s", target, 10, overwrite=True)
        assert str(target) in str(exc.value)
    # nothing was deleted or changed (the workspace's own row files may only have grown: none here)
    assert _tree_digest(ws.root) == before_ws
    assert _tree_digest(other) == before_other and plain.read_text() == "a file"
    assert not [q for q in tmp_path.iterdir() if q.name.startswith((".mine", ".plain", ".ws"))]  # no temp or old folders left
    # a folder that looks like an export but lies inside the workspace is still refused
    fake = ws.root / "exports" / "x"
    export_lerobot(catalog, "s", tmp_path / "real", 10)
    fake.parent.mkdir()
    (tmp_path / "real").rename(fake)
    with pytest.raises(LeRobotFormatError, match="inside the roboloop workspace"):
        export_lerobot(catalog, "s", fake, 10, overwrite=True)
    assert (fake / "meta" / "roboloop.json").is_file()
    # an earlier export outside the workspace is replaced
    out = tmp_path / "out"
    export_lerobot(catalog, "s", out, 10)
    rep = export_lerobot(catalog, "s", out, 5, overwrite=True)
    assert rep.fps == 5 and (out / "meta" / "roboloop.json").is_file()
