"""`rc-oa` and `rc-pai` as tool_before (see rc_agents.py)."""

from apps.rc_agents import build

oa, pai = build(tool_before=True)
