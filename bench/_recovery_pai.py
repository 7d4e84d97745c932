"""The Pydantic AI agent `bench/recovery.py` hosts with `tether worker _recovery_pai:agent`
(alone in its module, as a user's would be; the model is read from OPENAI_BASE_URL)."""

from pydantic_ai import Agent

agent = Agent("openai:bench-recovery", name="recovery-pai")


@agent.tool_plain
def lookup(i: int) -> str:
    """A record."""
    return f"record {i}"
