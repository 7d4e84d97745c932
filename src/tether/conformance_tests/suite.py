"""The conformance suite's test items: one per adapter x scenario x invariant.

Collected only when ``--tether-adapter`` is given (the plugin adds this file to the run).
Each item builds the scenario's agent with the adapter's kit, runs it (the runs of one
scenario are made once and shared by its items) and checks one invariant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether.conformance_tests._discovery import find_kit, kits, load_plugins
from tether.conformance_tests.kit import ConformanceKit
from tether.conformance_tests.scenarios import SCENARIOS, Invariant, Scenario, applicable

SAMPLE = next(s for s in SCENARIOS if s.name == "sequential_tools")
"""The scenario of the default SIGKILL sample (one kill, halfway)."""


@dataclass(frozen=True)
class Case:
    adapter: str
    scenario: Scenario
    invariant: Invariant

    @property
    def id(self) -> str:
        return f"{self.adapter}-{self.scenario.name}-{self.invariant.id}"


def _adapters(config: pytest.Config) -> list[str]:
    load_plugins(config.getoption("tether_plugins"))
    names: list[str] = []
    for name in config.getoption("tether_adapter"):
        if name == "all":
            names.extend(sorted(kits()[0]))
        else:
            names.append(name)
    return list(dict.fromkeys(names))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    cases = [
        Case(adapter, scenario, invariant)
        for adapter in _adapters(metafunc.config)
        for scenario in SCENARIOS
        for invariant in applicable(scenario)
    ]
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def tether_harness(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[object]:
    import os

    from tether.conformance_tests._harness import Harness

    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    os.environ.setdefault("OPENAI_API_KEY", "conformance-no-key")
    workdir: Path = tmp_path_factory.mktemp("tether-conformance")
    harness = Harness(
        workdir,
        address=pytestconfig.getoption("tether_temporal_address"),
        plugins=pytestconfig.getoption("tether_plugins"),
    )
    try:
        yield harness
    finally:
        harness.close()


_runs: dict[tuple[str, str], object] = {}


def _kit(name: str) -> ConformanceKit:
    return find_kit(name)


def _kill_points(case: Case, mode: str) -> list[int]:
    """After how many completed calls to SIGKILL: every boundary, or the middle one."""
    calls = case.scenario.steps()
    if mode == "all":
        return list(range(1, calls))
    return [max(1, calls // 2)]


def test_conformance(case: Case, request: pytest.FixtureRequest) -> None:
    from tether.conformance_tests._invariants import CHECKS, Checker, ConformanceFailure, Runs, Skip

    request.node.user_properties.append(
        (
            "tether_case",
            {
                "adapter": case.adapter,
                "scenario": case.scenario.name,
                "invariant": case.invariant.id,
                "number": case.invariant.number,
                "column": f"{case.invariant.number} {case.invariant.short}",
                "title": case.invariant.title,
            },
        )
    )
    kit = _kit(case.adapter)
    missing = sorted(c.value for c in case.scenario.needs - kit.capabilities())
    if missing:
        pytest.skip(f"{case.adapter} does not declare capability {', '.join(missing)}")
    mode = request.config.getoption("tether_sigkill")
    if case.invariant.id == "crash_sigkill" and mode == "none":
        pytest.skip("SIGKILL runs not requested (--tether-sigkill=none)")
    if case.invariant.id == "crash_sigkill" and mode == "sample" and case.scenario != SAMPLE:
        pytest.skip(f"not in the SIGKILL sample ({SAMPLE.name}); --tether-sigkill=all runs it")
    defect = kit.known_defects.get((case.scenario.name, case.invariant.id))
    if defect is not None:
        request.applymarker(pytest.mark.xfail(reason=f"known defect: {defect}", strict=True))
    harness = request.getfixturevalue("tether_harness")
    key = (case.adapter, case.scenario.name)
    runs = _runs.get(key)
    if runs is None:
        _runs.clear()  # one scenario's runs at a time: items come grouped by scenario
        runs = _runs[key] = Runs(harness, kit, case.scenario)
    assert isinstance(runs, Runs)
    checker = Checker(runs, case.invariant)
    try:
        if case.invariant.id == "crash_sigkill":
            CHECKS[case.invariant.id](checker, _kill_points(case, mode))
        else:
            CHECKS[case.invariant.id](checker)
    except Skip as exc:
        pytest.skip(str(exc))
    except ConformanceFailure as exc:
        request.node.user_properties.append(("tether_failure", str(exc)))
        raise
