"""The packages form layers, lowest first; a module imports only from its own layer or below
(ARCHITECTURE.md). Checked with the shared import_cycles tool, which also finds import cycles."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

LAYERS = ("pipeline", "engines", "stages", "runtime", "train", "bench", "monitor", "dfstream")
TOOL = REPO.parent / "shared" / "tools" / "import_cycles.py"


@pytest.mark.skipif(not TOOL.is_file(), reason=f"the import checker is not at {TOOL}")
def test_no_import_cycle_and_no_import_against_the_layers():
    result = subprocess.run([sys.executable, str(TOOL), str(REPO), "--layers", ",".join(LAYERS)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 cycles" in result.stdout


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS)
