"""The OpenAI Agents SDK agent `bench/recovery.py` hosts with `tether worker
_recovery_oa:agent` (the model is read from OPENAI_BASE_URL)."""

from agents import Agent, function_tool


@function_tool
def lookup(i: int) -> str:
    """A record."""
    return f"record {i}"


agent = Agent(name="recovery-oa", model="bench-recovery", tools=[lookup])
