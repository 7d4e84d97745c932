"""The agent a ``tether worker`` subprocess hosts in the suite's SIGKILL crash tests.

``tether worker tether.conformance_tests._hosted:agent`` rebuilds, from environment
variables the suite sets, the same agent the suite started the run with.
"""

from __future__ import annotations

import os

from tether.conformance_tests._discovery import find_kit, load_plugins
from tether.conformance_tests.kit import KitEnv
from tether.conformance_tests.scenarios import BY_NAME
from tether.core.handle import DurableAgent

load_plugins(os.environ.get("TETHER_CONFORMANCE_PLUGINS"))
_kit = find_kit(os.environ["TETHER_CONFORMANCE_ADAPTER"])
_scenario = BY_NAME[os.environ["TETHER_CONFORMANCE_SCENARIO"]]
agent = DurableAgent(
    _kit.build(_scenario, KitEnv.from_environ()),
    _kit.adapter(),
    name=_kit.agent_name(_scenario),
    local_worker=False,
)
