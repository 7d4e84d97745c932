"""`rc-oa` and `rc-pai` as base (see rc_agents.py)."""

from apps.rc_agents import build

oa, pai = build()
