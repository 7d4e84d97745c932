"""A worker's warm-up: what its first tasks would build lazily is built when the worker is,
then what it loaded is kept out of the garbage collector's passes, and the young
generation is collected less often.

Each case runs in a fresh interpreter: this one has built everything already."""

from __future__ import annotations

from fresh import run_fresh

_SETUP = """
import contextlib, gc, sys, tempfile, threading
import pydantic_ai
from pydantic_ai.messages import ModelMessagesTypeAdapter
from temporalio.api.common.v1 import Payload
from tether.core import converter, runtime
from tether.core.contract import RunRequest, StepOutcome, StepRequest, WaitAnswer
from tether.core.store import BlobStore

if sys.argv[1] == "warm":
    runtime.worker_options(BlobStore(tempfile.mkdtemp()))
    for thread in threading.enumerate():
        if thread.name == "tether-warm-up":
            thread.join(120)
"""

_FIRST_TASKS = """
# What a run's first task and first steps decode, and Pydantic AI's message history.
empty = Payload(metadata={"encoding": b"json/plain"}, data=b"null")
for type_ in (RunRequest, StepRequest, StepOutcome, WaitAnswer):
    with contextlib.suppress(Exception):
        converter._JSON.from_payload(empty, type_)
ModelMessagesTypeAdapter.validate_python([])
print(len(built), gc.get_freeze_count(), gc.get_threshold()[0])
"""


def _run(mode: str, **env: str) -> tuple[int, int, int]:
    built, frozen, young = run_fresh(_SETUP, _FIRST_TASKS, mode, **env)[-3:]
    return int(built), int(frozen), int(young)


def test_a_worker_builds_its_run_and_step_validators_before_its_first_task() -> None:
    built, frozen, young = _run("warm")
    assert built == 0
    assert frozen > 100_000  # modules, classes and schemas of every framework loaded
    assert young == 10_000


def test_without_a_worker_the_first_decode_builds_them() -> None:
    built, frozen, young = _run("cold")
    assert built > 0  # the check above sees the builds the warm-up saves
    assert (frozen, young) == (0, 700)  # Python's defaults


def test_the_collector_can_be_left_alone() -> None:
    built, frozen, young = _run("warm", TETHER_GC="0")
    assert built == 0
    assert (frozen, young) == (0, 700)
