"""One side of bench/steps.py, in its own process: hosts a worker and runs one tool loop of
--calls model calls against the driver's engine and scripted model server (model name
$BENCH_MODEL, so the server can tell the sides apart). Prints one JSON line when done."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from typing import Any

from _common import NOOP_STARTS, Floor, noop
from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import (
    PydanticAIPlugin,
    PydanticAIWorkflow,
    TemporalDurability,
)
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker


async def floor(args: argparse.Namespace) -> dict[str, Any]:
    client = await Client.connect(args.address)
    queue = f"steps-floor-{uuid.uuid4().hex[:6]}"
    activities = 2 * args.calls - 1
    async with Worker(client, task_queue=queue, workflows=[Floor], activities=[noop]):
        t = time.perf_counter()
        await client.execute_workflow(
            Floor.run, activities, id=f"floor-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        wall = time.perf_counter() - t
        # Each even activity stands where a model step stands in a tool loop.
        return {"s": wall, "activities": activities, "stamps": NOOP_STARTS[0::2]}


async def tether_side(args: argparse.Namespace) -> dict[str, Any]:
    import _profile_agents as agents

    import tether
    from tether.core.runtime import Runtime
    from tether.core.store import BlobStore

    with tempfile.TemporaryDirectory(prefix="tether-steps-") as store:
        runtime = await Runtime.start(address=args.address, store=BlobStore(store))
        queue = f"steps-{uuid.uuid4().hex[:6]}"
        t = time.perf_counter()
        if args.system == "tether_openai":
            durable = tether.durable(agents.openai_agent, runtime=runtime, task_queue=queue)
            await durable.run("go", max_turns=1_000_000)
        else:
            durable = tether.durable(agents.pydantic_agent, runtime=runtime, task_queue=queue)
            await durable.run("go", usage_limits=UsageLimits(request_limit=None))
        wall = time.perf_counter() - t
        await runtime.close()
    return {"s": wall}


async def plain_side(args: argparse.Namespace) -> dict[str, Any]:
    """The same agent run by its framework alone, in this process: no engine, no
    durability (what the loop costs before anyone makes it durable). ``hooked_*``: the
    same, with requests on the path a Tether model step sends them (the OpenAI client's
    and the Agents SDK's walks over the conversation skipped), so that what Tether adds
    is the side's time over the floor's plus this one's."""
    import _profile_agents as agents

    from tether.adapters import _openai_requests

    hooked = args.system.startswith("hooked_")
    if hooked:  # the request path a Tether model step takes (the client's walks skipped)
        _openai_requests.install()
        _openai_requests.install_sdk()
    t = time.perf_counter()
    with _openai_requests.plain_conversation() if hooked else contextlib.nullcontext():
        if args.system.endswith("_openai"):
            from agents import Runner

            await Runner.run(agents.openai_agent, "go", max_turns=1_000_000)
        else:
            limits = UsageLimits(request_limit=None)
            await agents.pydantic_agent.run("go", usage_limits=limits)
    return {"s": time.perf_counter() - t}


NATIVE_AGENTS: list[Any] = []


@workflow.defn(name="bench.StepsNativePydantic", sandboxed=False)
class NativePydanticLoop(PydanticAIWorkflow):
    __pydantic_ai_agents__ = NATIVE_AGENTS

    @workflow.run
    async def run(self, prompt: str) -> str:
        limits = UsageLimits(request_limit=None)
        return str((await NATIVE_AGENTS[0].run(prompt, usage_limits=limits)).output)


async def native_pydantic(args: argparse.Namespace) -> dict[str, Any]:
    size = int(os.environ.get("BENCH_RESULT_BYTES", "2000"))
    model = OpenAIChatModel(
        os.environ["BENCH_MODEL"],
        provider=OpenAIProvider(base_url=os.environ["OPENAI_BASE_URL"], api_key="bench"),
    )
    agent: Agent[None, str] = Agent(model, name="native", capabilities=[TemporalDurability()])

    @agent.tool_plain
    async def lookup_record(i: int) -> str:
        """A record of BENCH_RESULT_BYTES bytes."""
        return f"record {i}: " + "x" * size

    NATIVE_AGENTS[:] = [agent]
    client = await Client.connect(args.address, plugins=[PydanticAIPlugin()])
    queue = f"steps-native-pai-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[NativePydanticLoop]):
        t = time.perf_counter()
        await client.execute_workflow(
            NativePydanticLoop.run,
            "go",
            id=f"native-pai-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        return {"s": time.perf_counter() - t}


async def main(args: argparse.Namespace) -> None:
    sides = {
        "floor": floor,
        "tether_openai": tether_side,
        "tether_pydantic": tether_side,
        "native_pydantic": native_pydantic,
        "plain_openai": plain_side,
        "plain_pydantic": plain_side,
        "hooked_openai": plain_side,
        "hooked_pydantic": plain_side,
    }
    print(json.dumps(await sides[args.system](args)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--calls", type=int, required=True)
    asyncio.run(main(parser.parse_args()))
