"""`tether plugins` and `tether conformance`: installed adapters and their proof."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tether.errors import TetherError


def cmd_plugins(args: argparse.Namespace) -> int:
    from tether.plugins import installed

    report = installed()
    rows: list[dict[str, Any]] = []
    for adapter in report.adapters.values():
        rows.append(
            {
                "name": adapter.name,
                "status": "available",
                "framework": adapter.framework,
                "framework_version": adapter.framework_version(),
                "verified_versions": adapter.verified_versions,
                "capabilities": sorted(c.value for c in adapter.capabilities),
                "steps": [s.name for s in adapter.steps()],
            }
        )
    for name, why in report.unavailable.items():
        rows.append({"name": name, "status": "unavailable", "reason": why})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if row["status"] == "available":
            print(
                f"{row['name']}: {row['framework']} {row['framework_version']} "
                f"(verified {row['verified_versions']})"
            )
            print(f"  capabilities: {', '.join(row['capabilities'])}")
            print(f"  steps: {', '.join(row['steps'])}")
        else:
            print(f"{row['name']}: unavailable: {row['reason']}")
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    """Run the conformance suite (pytest in a subprocess) and print the report table."""
    import importlib.util
    import os
    import subprocess
    import tempfile

    from tether.conformance_tests._discovery import find_kit, kits, load_plugins
    from tether.conformance_tests._report import failed, render

    if importlib.util.find_spec("pytest") is None:
        raise TetherError(
            "the conformance suite runs on pytest, which is not installed. "
            "Fix: pip install 'tether[conformance]'"
        )
    load_plugins(args.plugins)
    found, broken = kits()
    adapters = args.adapters or sorted(found)
    for name in adapters:
        find_kit(name)  # a clear error naming the installed kits
    if not adapters:
        why = "".join(f"; {n}: {r}" for n, r in broken.items())
        raise TetherError(f"no installed adapter has a conformance kit{why}")
    with tempfile.TemporaryDirectory(prefix="tether-conformance-") as tmp:
        # An empty ini in an empty directory: the caller's pytest configuration stays out.
        Path(tmp, "pytest.ini").write_text("[pytest]\n")
        report_json = Path(tmp, "report.json")
        cmd = [sys.executable, "-m", "pytest", "-p", "tether.conformance_tests"]
        cmd += ["-p", "no:cacheprovider", "-p", "no:asyncio", "-q"]
        cmd += ["--tether-sigkill", args.sigkill]
        cmd += ["--tether-report-json", str(report_json)]
        for name in adapters:
            cmd += ["--tether-adapter", name]
        if args.plugins:
            cmd += ["--tether-plugins", args.plugins]
        if args.k:
            cmd += ["-k", args.k]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [os.getcwd(), env.get("PYTHONPATH", "")] if p
        )
        out = None if args.verbose else subprocess.DEVNULL
        print(f"running: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=out, check=False)
        if not report_json.exists():
            print(f"the suite did not run (pytest exit {proc.returncode})", file=sys.stderr)
            return proc.returncode or 2
        rows = json.loads(report_json.read_text())
    if proc.returncode not in (0, 1, 5):
        print(f"pytest ended with exit status {proc.returncode}; rerun with -v", file=sys.stderr)
    text = render(rows)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
        print(f"report written to {args.report}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if failed(rows) or proc.returncode not in (0, 5) else 0


def register(sub: Any) -> None:
    """Add this group's commands to the `tether` parser."""
    p = sub.add_parser("plugins", help="list installed adapters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins, is_async=False)

    p = sub.add_parser("conformance", help="run the conformance suite against installed adapters")
    p.add_argument("adapters", nargs="*", metavar="ADAPTER", help="default: every installed kit")
    p.add_argument("--report", help="also write the report (Markdown) to this file")
    p.add_argument(
        "--sigkill",
        choices=("none", "sample", "all"),
        default="sample",
        help="real SIGKILLed worker subprocesses: none, a sample (default), every boundary",
    )
    p.add_argument("--json", help="also write every item's outcome as JSON to this file")
    p.add_argument("-k", help="pytest -k expression selecting items")
    p.add_argument("--plugins", default="", help="extra plugin objects MODULE:OBJ[,...]")
    p.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    p.set_defaults(func=cmd_conformance, is_async=False)
