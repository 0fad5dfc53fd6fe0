"""Spore against each stock bore at hand, both ways: ``test_bore_interop.py`` in a private network namespace.

bore's control port is fixed at 7835, so each run gets a network namespace of
its own (``unshare -n``), where nothing else can hold that port.  The bores
are looked for in ``../shared/bore`` beside the checkout (or the folder
``SPORE_BORE_DIR`` names); they are test tools, and nothing in Spore needs
them.  Skips, with the reason, where there is no bore or no namespace to be had.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BORE_DIR = Path(os.environ.get("SPORE_BORE_DIR", ROOT.parent / "shared" / "bore"))
VERSIONS = ("bore-0.5", "bore-0.6")


def _namespace_problem() -> str | None:
    """Why no private network namespace can be had here, or None."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare -n failed: {e}"
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.strip()}"
    return None


@pytest.mark.parametrize("version", VERSIONS)
def test_spore_works_with_a_stock_bore_both_ways(version):
    bore = BORE_DIR / version
    if not os.access(bore, os.X_OK):
        pytest.skip(f"no stock bore at {bore}")
    if problem := _namespace_problem():
        pytest.skip(problem)
    inner = (
        f"ip link set lo up && exec {sys.executable} -m pytest -q "
        f"{ROOT / 'tests' / 'test_bore_interop.py'}"
    )
    run = subprocess.run(
        ["unshare", "-n", "sh", "-c", inner],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "SPORE_TEST_BORE": str(bore)},
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # Every interop test ran (none skipped): 3 for each of the 2 pairs, and a bore client's named secret.
    assert re.search(r"^7 passed", run.stdout, re.MULTILINE), run.stdout[-4000:]
