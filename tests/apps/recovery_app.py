"""A Pydantic AI agent for recovery tests: `tether worker apps.recovery_app:agent` (the model
is read from OPENAI_BASE_URL, which tests point at the scripted model server)."""

from pydantic_ai import Agent

agent = Agent("openai:gpt-recovery", name="recovery")


@agent.tool_plain
def lookup(i: int) -> str:
    """A record."""
    return f"record {i}"
