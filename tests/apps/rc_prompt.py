"""`rc-oa` and `rc-pai` as prompt (see rc_agents.py)."""

from apps.rc_agents import build

oa, pai = build(prompt="Answer with the alerts, in one line.")
