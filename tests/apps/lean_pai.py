"""A Pydantic AI agent alone in its module: what `tether worker` of it imports is checked."""

from pydantic_ai import Agent

agent = Agent("openai:gpt-lean-pai", name="lean-pai")
