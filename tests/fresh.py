"""Run a snippet in a fresh interpreter (this one has loaded and built everything already),
counting the Pydantic schemas it builds after its set-up."""

from __future__ import annotations

import os
import subprocess
import sys

_COUNT_BUILDS = """
from pydantic._internal import _generate_schema
built = []
_generate = _generate_schema.GenerateSchema.generate_schema
def _counted(self, obj):
    built.append(obj)
    return _generate(self, obj)
_generate_schema.GenerateSchema.generate_schema = _counted
"""


def run_fresh(setup: str, measured: str, *args: str, **env: str) -> list[str]:
    """Run ``setup``, then ``measured`` with every Pydantic schema built from then on
    appended to ``built``; the words ``measured`` printed (``args`` are ``sys.argv[1:]``)."""
    proc = subprocess.run(
        [sys.executable, "-c", setup + _COUNT_BUILDS + measured, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()
