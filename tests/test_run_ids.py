"""Run ids: the same input attaches, another input is an error, a failed id can be retried."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel
from openai import AsyncOpenAI

import tether
from tether.core.runtime import AgentWorker, Runtime
from tether.errors import RunFailedError, RunIdConflictError
from tether.testing import Fault, ScriptedModelServer, Turn

pytestmark = pytest.mark.timeout(600)


def agent_for(server: ScriptedModelServer, name: str) -> Agent[Any]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    return Agent(name=name, model=OpenAIResponsesModel(model="gpt-ids", openai_client=client))


async def test_the_same_input_attaches_and_another_input_is_refused(
    runtime: Runtime, task_queue: str, worker: AgentWorker
) -> None:
    run_id = f"ids-{uuid.uuid4().hex[:6]}"
    with ScriptedModelServer([Turn.text("first answer")]) as server:
        durable = tether.durable(
            agent_for(server, "ids-a"), runtime=runtime, task_queue=task_queue, local_worker=False
        )
        first = await durable.start("question one", id=run_id)
        assert first.created
        assert (await first.result()).final_output == "first answer"
        again = await durable.start("question one", id=run_id)
        assert not again.created
        assert (await again.result()).final_output == "first answer"
        with pytest.raises(RunIdConflictError) as info:
            await durable.start("question two", id=run_id)
        with pytest.raises(RunIdConflictError):
            await durable.start("question one", id=run_id, if_exists="error")
        assert server.count() == 1  # nothing ran again
    text = str(info.value)
    assert f"a run with id {run_id!r} already exists (completed) with a different input" in text
    assert "Fix: use a new id" in text


async def test_a_failed_id_starts_again_on_request(
    runtime: Runtime, task_queue: str, worker: AgentWorker
) -> None:
    run_id = f"ids-{uuid.uuid4().hex[:6]}"
    script = [Turn.text("second time lucky", faults=[Fault.server_error(400)])]
    with ScriptedModelServer(script) as server:
        durable = tether.durable(
            agent_for(server, "ids-b"), runtime=runtime, task_queue=task_queue, local_worker=False
        )
        failed = await durable.start("try", id=run_id)
        with pytest.raises(RunFailedError):
            await failed.result()
        with pytest.raises(RunIdConflictError) as info:
            await durable.start("try harder", id=run_id)
        assert "if_exists='retry'" in str(info.value) and "(failed)" in str(info.value)
        retried = await durable.start("try harder", id=run_id, if_exists="retry")
        assert retried.created
        assert (await retried.result()).final_output == "second time lucky"
        # A completed run is not started again, even on request.
        same = await durable.start("try harder", id=run_id, if_exists="retry")
        assert not same.created
        assert server.count() == 2


async def test_tether_run_retry_starts_a_failed_id_again(
    runtime: Runtime, worker_env: dict[str, str]
) -> None:
    run_id = f"cli-ids-{uuid.uuid4().hex[:6]}"
    script = {"gpt-weather": [Turn.text("CA: quiet", faults=[Fault.server_error(400)])]}
    with ScriptedModelServer(script) as server:
        env = dict(worker_env, OPENAI_BASE_URL=server.base_url)

        async def run(*extra: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "tether.cli",
                    "run",
                    "apps.openai_apps:weather",
                    "alerts?",
                    "--id",
                    run_id,
                    "--local-worker",
                    "--quiet",
                    *extra,
                ],
                env=env or dict(os.environ),
                capture_output=True,
                text=True,
                timeout=400,
            )

        first = await run()
        assert first.returncode != 0
        conflict = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "tether.cli",
                "run",
                "apps.openai_apps:weather",
                "other?",
                "--id",
                run_id,
                "--no-wait",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert conflict.returncode == 2
        assert "different input" in conflict.stderr and "\n" not in conflict.stderr.strip()
        again = await run("--retry")
        assert again.returncode == 0, again.stderr[-2000:]
        assert again.stdout.strip().endswith("CA: quiet")
