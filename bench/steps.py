"""Per-step cost versus step number, side by side: Tether (both adapters), the native
integrations and the bare engine floor, on one embedded engine and one scripted model
server, runs interleaved.

    pip install -c constraints.txt -e '.[bench]'    # matplotlib and py-spy
    bash bench/setup_native.sh                      # Temporal's OpenAI Agents plugin venv
    python bench/steps.py --calls 1000 --repeat 3 --png docs/img/steps.png

Each side runs in its own process (a worker and the run's client): Tether with the OpenAI
Agents SDK and with Pydantic AI, Temporal's `OpenAIAgentsPlugin` (in bench/.venv-native),
Pydantic AI's `TemporalDurability`, the floor (a workflow of 2N-1 no-op activities), and each
framework alone (the same agent run by its own loop, no engine: what the loop costs before
anyone makes it durable; the model server's answers are in it, as in every side). Every
model call but the last asks for one tool whose result is --result-bytes long. The model
server stamps each request with the time and the side process's CPU time (from /proc), so
for model call k the wall time and the CPU time from call k to call k+1 are the cost of one
loop turn (model step, tool step and the run tasks between them).

Printed: per side, medians over windows of --window calls at calls 10, 100 and 1,000 (as far
as the run got; a native run stopped by Temporal's history limit says where), and the
floor's time per activity. --png plots per-call wall and CPU time against the call number.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import script

from tether.testing import RecordedRequest, ScriptedModelServer, Turn

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
SYSTEMS = (
    "floor",
    "tether_openai",
    "native_openai",
    "plain_openai",
    "hooked_openai",
    "tether_pydantic",
    "native_pydantic",
    "plain_pydantic",
    "hooked_pydantic",
)
TOOL = {
    "tether_openai": "lookup",
    "native_openai": "lookup",
    "plain_openai": "lookup",
    "hooked_openai": "lookup",
}
LABEL = {
    "floor": "bare engine floor",
    "tether_openai": "Tether + OpenAI Agents SDK",
    "native_openai": "native OpenAIAgentsPlugin",
    "tether_pydantic": "Tether + Pydantic AI",
    "native_pydantic": "native TemporalDurability",
    "plain_openai": "OpenAI Agents SDK alone (not durable)",
    "plain_pydantic": "Pydantic AI alone (not durable)",
    "hooked_openai": "OpenAI Agents SDK alone, Tether's request path",
    "hooked_pydantic": "Pydantic AI alone, Tether's request path",
}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICKS


class Stamps:
    """Per lane: (time, CPU seconds of the lane's process) at each model request."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.lock = threading.Lock()
        self.pids: dict[str, int] = {}
        self.seen: dict[str, list[tuple[float, float]]] = {}
        self.scripts: dict[str, list[Turn]] = {}

    def respond(self, request: RecordedRequest) -> Turn:
        pid = self.pids.get(request.lane)
        stamp = (time.perf_counter(), cpu_seconds(pid) if pid else float("nan"))
        with self.lock:
            self.seen.setdefault(request.lane, []).append(stamp)
        tool = TOOL.get(request.lane.split("#")[0], "lookup_record")
        if tool not in self.scripts:
            self.scripts[tool] = script(self.calls, tool)
        return self.scripts[tool][min(request.turn, self.calls - 1)]


def run_side(
    system: str, lane: str, args: argparse.Namespace, address: str, base_url: str, stamps: Stamps
) -> dict[str, Any]:
    env = dict(
        os.environ,
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="bench",
        OPENAI_AGENTS_DISABLE_TRACING="1",
        BENCH_MODEL=lane,
        BENCH_RESULT_BYTES=str(args.result_bytes),
        PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent / "src")]),
    )
    if system == "native_openai":
        cmd = [
            args.native_python,
            str(HERE / "_native_openai_agents.py"),
            "--address",
            address,
            "--model",
            lane,
            "--repeat",
            "1",
            "--result-bytes",
            str(args.result_bytes),
        ]
    else:
        cmd = [
            sys.executable,
            str(HERE / "_steps_side.py"),
            "--system",
            system,
            "--address",
            address,
            "--calls",
            str(args.calls),
        ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stamps.pids[lane] = proc.pid
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"not finished after {args.timeout:.0f} s"}
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (err.strip().splitlines() or ["no output"])[-1]
        return {"error": last[:300]}
    return dict(lines[-1])


def per_call(stamps: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds from each model call to the next."""
    wall = [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(stamps)]
    cpu = [(b[1] - a[1]) * 1000 for a, b in itertools.pairwise(stamps)]
    return wall, cpu


def window(values: list[float], at: int, size: int) -> float | None:
    """Median of ``size`` calls from call ``at`` on (ending at the last call when the run
    ends sooner: ``--calls 1001`` gives call 1,000 the window of calls 991-1,000)."""
    first = max(0, min(at - 1, len(values) - size))
    part = [v for v in values[first : first + size] if v == v]  # skip NaN
    return statistics.median(part) if len(part) >= max(1, size // 2) else None


def floor_per_call(run: dict[str, Any], at: int, size: int) -> float | None:
    """The floor run's wall per two activities (a model step and a tool step's worth) at
    activity pair ``at``: the same window statistic as the sides' model calls. Runs without
    per-activity stamps give their whole run's mean."""
    if run.get("stamps"):
        return window(per_call(run["stamps"])[0], at, size)
    return 2 * run["s"] * 1000 / run["activities"] if "s" in run else None


def paired_ratios(
    results: dict[str, list[dict[str, Any]]], system: str, at: int, size: int
) -> list[float]:
    """Per round, the side's wall per call at call ``at`` over the floor's in the same
    round: the machine's load drifts over minutes, and a round's runs are adjacent."""
    out = []
    for mine, floor in zip(results.get(system, []), results.get("floor", []), strict=False):
        wall = window(per_call(mine.get("stamps", []))[0], at, size)
        base = floor_per_call(floor, at, size)
        if wall is not None and base:
            out.append(wall / base)
    return out


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    marks = [m for m in (10, 100, 1000) if m < args.calls]
    table: dict[str, Any] = {}
    floor_ms = (
        statistics.median(
            r["s"] * 1000 / r["activities"] for r in results.get("floor", []) if "s" in r
        )
        if any("s" in r for r in results.get("floor", []))
        else None
    )
    print(
        f"\nPer model call (one model step + one tool step + run tasks), medians of "
        f"{args.window}-call windows, medians over {args.repeat} runs; "
        f"{args.result_bytes}-byte tool results\n"
    )
    floor_at: dict[int, float] = {}
    for m in marks:
        calls = [floor_per_call(r, m, args.window) for r in results.get("floor", [])]
        if any(c is not None for c in calls):
            floor_at[m] = statistics.median(c for c in calls if c is not None)
    if floor_ms is not None:
        steady = ", ".join(f"{floor_at[m]:.1f} ms per call at call {m}" for m in floor_at)
        print(
            f"bare engine floor: whole run {floor_ms:.1f} ms per activity "
            f"({2 * floor_ms:.1f} ms per call); two activities' window, as the sides: {steady}\n"
        )
    head = " | ".join(f"wall@{m}" for m in marks) + " | " + " | ".join(f"cpu@{m}" for m in marks)
    print(f"| side | {head} | reached | note |")
    print("|---" * (2 * len(marks) + 3) + "|")
    for system in SYSTEMS:
        if system == "floor" or system not in results:
            continue
        runs = results[system]
        walls = [per_call(r["stamps"])[0] for r in runs]
        cpus = [per_call(r["stamps"])[1] for r in runs]
        row: dict[str, Any] = {"reached": max(len(r["stamps"]) for r in runs)}
        cells = []
        for kind, series in (("wall", walls), ("cpu", cpus)):
            for m in marks:
                vals = [v for v in (window(s, m, args.window) for s in series) if v is not None]
                row[f"{kind}@{m}"] = statistics.median(vals) if vals else None
                cells.append(f"{row[f'{kind}@{m}']:.1f}" if vals else "-")
        errors = sorted({r["error"] for r in runs if r.get("error")})
        row["note"] = "; ".join(errors)
        table[system] = row
        print(
            f"| {LABEL[system]} | " + " | ".join(cells) + f" | {row['reached']} | {row['note']} |"
        )
    if floor_ms is not None:
        print(
            "\nRatios (wall per call): Tether / floor, Tether / native, Tether / the framework "
            "alone, and Tether's time over the framework alone's against the floor's"
        )
        for mine, theirs, alone in (
            ("tether_openai", "native_openai", "plain_openai"),
            ("tether_pydantic", "native_pydantic", "plain_pydantic"),
        ):
            hooked = alone.replace("plain_", "hooked_")
            for m in marks:
                t = table.get(mine, {}).get(f"wall@{m}")
                n = table.get(theirs, {}).get(f"wall@{m}")
                a = table.get(alone, {}).get(f"wall@{m}")
                base = floor_at.get(m, 2 * floor_ms)
                floor_text = f"{t / base:.2f}x floor" if t else "-"
                native_text = f"{t / n:.2f}x native" if t and n else "- native"
                alone_text = (
                    f", {t / a:.2f}x the framework alone; over it {t - a:+.1f} ms per call "
                    f"= {(t - a) / base:.2f}x the floor's {base:.1f} ms"
                    if t and a
                    else ""
                )
                print(f"  {LABEL[mine]} @ call {m}: {floor_text}, {native_text}{alone_text}")
                h = table.get(hooked, {}).get(f"wall@{m}")
                if t and h:
                    print(
                        f"    over the floor plus the framework alone on Tether's request path "
                        f"({base:.1f} + {h:.1f} ms): {t - base - h:+.1f} ms per call"
                    )
                paired = paired_ratios(results, mine, m, args.window)
                if paired:
                    table.setdefault(mine, {})[f"paired@{m}"] = paired
                    print(
                        f"    paired with the floor run of the same round: median "
                        f"{statistics.median(paired):.2f}x floor ({min(paired):.2f}-"
                        f"{max(paired):.2f}) over {len(paired)} rounds"
                    )
    return {"floor_ms_per_activity": floor_ms, "floor_ms_per_call_at": floor_at, "table": table}


def plot(path: str, results: dict[str, list[dict[str, Any]]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: pip install -e '.[bench]' for the plot")
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    for system in SYSTEMS:
        if system == "floor" or system not in results:
            continue
        run = max(results[system], key=lambda r: len(r["stamps"]))
        wall, cpu = per_call(run["stamps"])
        xs = list(range(1, len(wall) + 1))
        top.plot(xs, _rolling(wall), label=LABEL[system])
        bottom.plot(xs, _rolling(cpu), label=LABEL[system])
    top.set_ylabel("wall ms per model call")
    bottom.set_ylabel("worker CPU ms per model call")
    bottom.set_xlabel("model call")
    for ax in (top, bottom):
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    top.legend()
    fig.suptitle("Per-call cost versus call number (rolling median of 9)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def _rolling(values: list[float], k: int = 9) -> list[float]:
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - k // 2) : i + k // 2 + 1] if v == v]
        out.append(statistics.median(part) if part else float("nan"))
    return out


async def bench(args: argparse.Namespace) -> None:
    from tether.core.devserver import EmbeddedEngine

    native_ok = os.path.exists(args.native_python)  # noqa: ASYNC240
    systems = [s for s in args.systems if s != "native_openai" or native_ok]
    if "native_openai" in args.systems and "native_openai" not in systems:
        print(f"skipping native_openai: no {args.native_python} (run bench/setup_native.sh)")
    stamps = Stamps(args.calls)
    results: dict[str, list[dict[str, Any]]] = {}
    async with EmbeddedEngine(persist=False, ui=False) as engine:
        with ScriptedModelServer(responder=stamps.respond) as server:
            for r in range(args.repeat):
                for system in systems:  # interleaved: one run of each side per round
                    lane = f"{system}#{r}"
                    t = time.perf_counter()
                    out = await asyncio.to_thread(
                        run_side, system, lane, args, engine.address, server.base_url, stamps
                    )
                    if system == "floor":  # the side's own activity times
                        out["stamps"] = [(t, float("nan")) for t in out.get("stamps", [])]
                    else:
                        out["stamps"] = stamps.seen.get(lane, [])
                    results.setdefault(system, []).append(out)
                    note = f" ({out['error']})" if out.get("error") else ""
                    print(
                        f"  round {r + 1}: {system} done in {time.perf_counter() - t:.0f} s, "
                        f"{len(out['stamps'])} model calls{note}",
                        flush=True,
                    )
    summary = report(args, results)
    if args.png:
        plot(args.png, results)
    if args.json:
        series = {k: [r.get("stamps", []) for r in v] for k, v in results.items()}
        text = json.dumps({"args": vars(args), **summary, "stamps": series})
        Path(args.json).write_text(text)  # noqa: ASYNC240 - once, at the end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100, help="model calls per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--result-bytes", type=int, default=2000)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--png", help="write the plot here")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument(
        "--native-python",
        default=str(HERE / ".venv-native" / "bin" / "python"),
        help="python of the virtualenv made by bench/setup_native.sh",
    )
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
