"""`tether demo`, the README's first command, runs to completion as a new user sees it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path


async def test_demo_kills_a_worker_and_the_run_resumes_without_repeating_calls(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TEMPORAL_"))}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", "demo", "--state-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "KILLED worker 1 with SIGKILL after step 3" in out
    assert "Answer: Yes: a Heat Advisory" in out
    assert "model calls made at the provider: 4 (needed 4)" in out
    assert "steps completed: 7" in out
