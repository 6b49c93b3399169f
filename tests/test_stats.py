"""The stats package is pure statistics: importing it loads no catalog, workspace or simulator."""

from __future__ import annotations

import subprocess
import sys

STATS_MODULES = ("roboloop.stats", "roboloop.stats.intervals", "roboloop.stats.exact", "roboloop.stats.multiplicity", "roboloop.stats.sequential")
ALLOWED = {"roboloop", "roboloop.schema", "roboloop.errors", "roboloop.config", *STATS_MODULES}


def test_stats_imports_nothing_below_its_floor():
    code = (
        "import sys\n"
        f"for m in {STATS_MODULES!r}: __import__(m)\n"
        "print(' '.join(sorted(m for m in sys.modules if m == 'roboloop' or m.startswith('roboloop.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= ALLOWED, f"stats pulled in {sorted(set(out) - ALLOWED)}"
