"""A user's own worker process (plain temporalio) with Tether added through its plugin.

    python -m apps.user_worker      # env: TEMPORAL_ADDRESS, TETHER_STORE, TETHER_TASK_QUEUE

Hosts the user's SupportTicket workflow and lookup_customer activity, and the `weather`
agent of apps.openai_apps (its model reads OPENAI_BASE_URL).
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from apps.openai_apps import weather
from apps.user_workflows import SupportTicket, lookup_customer
from tether.contrib.temporal import TetherPlugin


async def main() -> None:
    plugin = TetherPlugin(agents=[weather], store=os.environ["TETHER_STORE"])
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"], plugins=[plugin])
    worker = Worker(
        client,
        task_queue=os.environ["TETHER_TASK_QUEUE"],
        workflows=[SupportTicket],
        activities=[lookup_customer],
        # A killed worker's cached workflows move to another worker after this long.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
    )
    print("worker started", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
