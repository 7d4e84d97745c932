"""Bad command-line input: one line naming the cause and the fix, exit status 2, no traceback.
And prompts too long for a command line, from a file or standard input."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tether.cli import main
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.testing import ScriptedModelServer, ToolCall, Turn

pytestmark = pytest.mark.timeout(600)
AGENT = "apps.openai_apps:weather"


def one_line_error(err: str) -> str:
    text = err.strip()
    assert "Traceback" not in text, text
    assert "\n" not in text, text
    assert text.startswith("tether"), text
    return text


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-tokens", "-5"], "argument --max-tokens: -5 is not positive"),
        (["--max-tokens", "lots"], "'lots' is not a whole number"),
        (["--wait-timeout", "0"], "argument --wait-timeout: 0 is not a positive number"),
        (["--max-cost", "nan"], "argument --max-cost: nan is not a positive number"),
        (["--max-turns", "0"], "argument --max-turns: 0 is not positive"),
        (["--context", "{bad"], "argument --context: not valid JSON"),
        (["--context", "[1, 2]"], "a JSON list, not an object"),
    ],
)
def test_bad_run_options_are_one_line_errors(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["run", AGENT, "hello", *args], capsys)
    assert code == 2
    line = one_line_error(err)
    assert says in line, line
    assert "Fix:" in line, line


def test_a_bad_status_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["runs", "list", "--status", "bogus"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "--status 'bogus' is not a run status" in line and "Fix:" in line, line


def test_a_module_that_raises_at_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken_agents.py").write_text("agent = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = run_main(["run", "broken_agents:agent", "hello"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "importing module 'broken_agents' raised ZeroDivisionError" in line, line
    assert "python -c 'import broken_agents'" in line, line


def test_no_prompt_and_two_prompts_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["run", AGENT], capsys)
    assert code == 2
    assert "no prompt. Fix:" in one_line_error(err)
    prompt = tmp_path / "p.txt"
    prompt.write_text("hi")
    code, err = run_main(["run", AGENT, "hello", "--prompt-file", str(prompt)], capsys)
    assert code == 2
    assert "give the prompt once" in one_line_error(err)
    code, err = run_main(["run", AGENT, "--prompt-file", str(tmp_path / "nope.txt")], capsys)
    assert code == 2
    assert "cannot read --prompt-file" in one_line_error(err)


def test_a_non_utf8_prompt_byte_is_refused(tmp_path: Path) -> None:
    # The byte reaches the process as the shell passes it: through argv, not as a str.
    proc = subprocess.run(
        [sys.executable, "-m", "tether.cli", "run", AGENT, b"caf\xe9 ?"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)),
    )
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc.stderr)
    assert "the prompt is not valid UTF-8 (byte 0xe9" in line and "Fix:" in line, line
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9")
    proc = subprocess.run(
        [sys.executable, "-m", "tether.cli", "run", AGENT, "--prompt-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent)),
    )
    assert proc.returncode == 2, proc.stderr
    assert "is not valid UTF-8 (byte 0xe9 at offset 3)" in one_line_error(proc.stderr)


async def cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tether.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=400,
    )


@pytest.mark.parametrize(
    "args",
    [["runs", "show", "no-such-run"], ["runs", "pending", "no-such-run"]],
)
async def test_unknown_run_ids_are_one_line_errors(
    args: list[str], engine: EmbeddedEngine, worker_env: dict[str, str]
) -> None:
    proc = await cli(*args, env=worker_env)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc.stderr.decode())
    assert "no run 'no-such-run'" in line and "Fix:" in line, line


async def test_approving_an_unknown_run_is_a_one_line_error(
    engine: EmbeddedEngine, worker_env: dict[str, str]
) -> None:
    proc = await cli("approve", "no-such-run", "call_1", env=worker_env)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc.stderr.decode())
    assert "no-such-run" in line and "Fix:" in line, line


async def test_prompts_over_128_kb_come_from_a_file_or_stdin(
    engine: EmbeddedEngine, worker_env: dict[str, str], tmp_path: Path
) -> None:
    big = "Summarize the alerts in this log. " + "line of log text\n" * 9000  # ~150 KB
    assert len(big.encode()) > 128 * 1024
    path = tmp_path / "prompt.txt"
    path.write_text(big)
    script = [Turn.tool_calls(ToolCall("get_weather_alerts", {"state": "CA"})), Turn.text("ok")]
    for how in ("file", "stdin"):
        with ScriptedModelServer(script) as server:
            env = dict(worker_env, OPENAI_BASE_URL=server.base_url)
            args = ["--prompt-file", str(path)] if how == "file" else ["-"]
            proc = await cli(
                "run",
                AGENT,
                *args,
                "--local-worker",
                "--quiet",
                env=env,
                stdin=big.encode() if how == "stdin" else None,
            )
            assert proc.returncode == 0, proc.stderr.decode()[-2000:]
            assert proc.stdout.decode().strip().endswith("ok")
            first = server.requests[0].body_text
            assert "line of log text" in first and len(first) > 128 * 1024


async def test_approve_with_no_worker_up_returns_at_once(
    runtime: Runtime, worker_env: dict[str, str]
) -> None:
    from agents import Agent

    import tether

    durable = tether.durable(
        Agent(name="cli-nobody", model="gpt-none"),
        runtime=runtime,
        task_queue=worker_env["TETHER_TASK_QUEUE"],
        local_worker=False,
    )
    handle = await durable.start("hello", id=f"cli-nobody-{uuid.uuid4().hex[:6]}")
    try:
        proc = await cli("approve", handle.id, "call_1", env=worker_env)
        assert proc.returncode == 2, proc.stderr
        line = one_line_error(proc.stderr.decode())
        assert "no worker hosts agent 'cli-nobody'" in line, line
        assert "nothing was recorded" in line and "Fix:" in line, line
    finally:
        await handle.terminate()
