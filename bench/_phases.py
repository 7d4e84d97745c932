"""Ad-hoc: where a step's wall time goes, from the run's history timestamps."""

import asyncio, os, sys, tempfile, time, statistics, collections
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from long_run import LeanServer, Worker, Stamps, AGENTS, HERE
from _common import script


async def floor(calls, address):
    from temporalio.client import Client
    from temporalio.worker import Worker as TW
    from _common import Floor, noop

    client = await Client.connect(address)
    async with TW(client, task_queue="floorq", workflows=[Floor], activities=[noop]):
        t0 = time.perf_counter()
        h = await client.start_workflow(Floor.run, 2 * calls - 1, id="floor1", task_queue="floorq")
        await h.result()
        print("floor wall", round(time.perf_counter() - t0, 2))
        return await h.fetch_history()


async def main(adapter: str, calls: int, address: str) -> None:
    import _profile_agents as agents
    import tether
    from tether.core.runtime import Runtime, agent_queue
    from tether.core.store import BlobStore
    from temporalio.api.enums.v1 import EventType as E
    from temporalio.api.enums.v1 import EventType as E

    if adapter == "floor":
        hist = await floor(calls, address)
        return report(hist)
    target, name, tool = AGENTS[adapter]
    work = Path(tempfile.mkdtemp())
    stamps = Stamps(script(calls, tool))
    with LeanServer(responder=stamps.respond) as server:
        env = dict(
            os.environ,
            OPENAI_BASE_URL=server.base_url,
            OPENAI_API_KEY="bench",
            OPENAI_AGENTS_DISABLE_TRACING="1",
            BENCH_MODEL="profile",
            BENCH_RESULT_BYTES="2000",
            TETHER_TASK_QUEUE=f"ph-{adapter}",
            TETHER_STORE=str(work / "store"),
            TETHER_HOME=str(work),
            TETHER_ADDRESS=address,
            PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent / "src")]),
        )
        os.environ.update({k: env[k] for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")})
        runtime = await Runtime.start(address=address, store=BlobStore(str(work / "store")))
        queue = agent_queue(f"ph-{adapter}", name)
        w = Worker(target, env, work / "w.log")
        while await runtime.pollers(queue) == 0:
            await asyncio.sleep(0.1)
        agent = agents.openai_agent if adapter == "openai_agents" else agents.pydantic_agent
        durable = tether.durable(agent, runtime=runtime, task_queue=queue, local_worker=False)
        t0 = time.perf_counter()
        h = (
            await durable.start("go")
            if adapter != "openai_agents"
            else await durable.start("go", max_turns=10000)
        )
        await h.result()
        print(adapter, "wall", round(time.perf_counter() - t0, 2), "s for", calls, "calls")
        hist = await runtime.client.get_workflow_handle(h.id).fetch_history()
        w.proc.stop()
        await runtime.close()
    report(hist)


def report(hist):
    from temporalio.api.enums.v1 import EventType as E

    ev = hist.events
    t = lambda e: e.event_time.ToDatetime().timestamp()
    ph = collections.defaultdict(list)
    kinds = collections.Counter(E.Name(e.event_type) for e in ev)
    print(dict(kinds))
    sched = {}
    last = None
    for e in ev[:]:
        k = e.event_type
        if k == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            sched[e.event_id] = (
                t(e),
                e.activity_task_scheduled_event_attributes.activity_type.name,
            )
        elif k == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            s, n = sched[e.activity_task_started_event_attributes.scheduled_event_id]
            ph[f"{n} sched->start"].append(t(e) - s)
        elif k == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            s, n = sched[e.activity_task_completed_event_attributes.scheduled_event_id]
            ph[f"{n} sched->completed"].append(t(e) - s)
            last = t(e)
        elif k == E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            wsch = t(e)
            if last:
                ph["act done->wft sched"].append(wsch - last)
        elif k == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            ph["wft sched->start"].append(t(e) - wsch)
            wst = t(e)
        elif k == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            ph["wft start->completed"].append(t(e) - wst)
    for k, v in ph.items():
        v = v[3:]
        if v:
            print(
                f"{k:45} n={len(v):4} median {statistics.median(v) * 1000:7.1f} ms  mean {statistics.mean(v) * 1000:7.1f}"
            )


async def top():
    from tether.core.devserver import EmbeddedEngine

    async with EmbeddedEngine(persist=False, ui=False) as engine:
        for a in sys.argv[1].split(","):
            await main(a, int(sys.argv[2]), engine.address)


if __name__ == "__main__":
    asyncio.run(top())
