"""`rc-oa` and `rc-pai` as safe (see rc_agents.py)."""

from apps.rc_agents import build

oa, pai = build(unreached_tool=True, new_tool_body=True)
