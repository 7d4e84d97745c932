"""`rc-oa` and `rc-pai` as args (see rc_agents.py)."""

from apps.rc_agents import build, framed_input

oa, pai = build(translate_input=framed_input, upper_state=True)
