"""pytest plugin of the conformance suite: inert unless ``--tether-adapter`` is given.

Registered through the ``pytest11`` entry point, so it loads in every pytest session where
Tether is installed; it imports nothing beyond pytest and the standard library until asked.
``pytest --tether-adapter NAME`` collects the suite (``tether/conformance_tests/suite.py``)
for that adapter, one item per adapter x scenario x invariant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SUITE = Path(__file__).with_name("suite.py")
SIGKILL_MODES = ("none", "sample", "all")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tether", "Tether conformance suite")
    group.addoption(
        "--tether-adapter",
        action="append",
        default=[],
        metavar="NAME",
        help="run the conformance suite against this adapter ('all': every installed kit)",
    )
    group.addoption(
        "--tether-sigkill",
        choices=SIGKILL_MODES,
        default="sample",
        help="real SIGKILLed worker subprocesses: none, a sample (default) or every boundary",
    )
    group.addoption(
        "--tether-plugins",
        default="",
        metavar="MODULE:OBJ[,...]",
        help="extra tether plugin objects to register (adapters not installed as packages)",
    )
    group.addoption(
        "--tether-temporal-address",
        default=None,
        help="use this Temporal server instead of starting a dev server",
    )
    group.addoption(
        "--tether-report-json",
        default=None,
        metavar="PATH",
        help="write each item's adapter, scenario, invariant and outcome as JSON here",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("tether_adapter"):
        return
    suite = str(SUITE)
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        if suite not in config.args:
            config.args.append(suite)
    else:  # no paths given: the suite only, not the project's own tests
        config.args[:] = [suite]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props: dict[str, Any] = {str(k): v for k, v in report.user_properties}
    case = props.get("tether_case")
    if case is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        row = dict(case)
        row["outcome"] = report.outcome
        if hasattr(report, "wasxfail"):  # a known defect, declared by the kit
            row["outcome"] = "xfailed" if report.outcome == "skipped" else "failed"
            row["reason"] = str(report.wasxfail) or "xpassed (strict): the defect is fixed"
        elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            row["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.outcome == "failed":
            row["reason"] = str(props.get("tether_failure") or report.longreprtext[-1500:])
        row["duration"] = round(report.duration, 2)
        _rows.append(row)


_rows: list[dict[str, Any]] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("tether_report_json", None)
    if path and session.config.getoption("tether_adapter"):
        Path(path).write_text(json.dumps(_rows, indent=1))
