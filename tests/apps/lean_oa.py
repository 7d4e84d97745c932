"""An OpenAI Agents SDK agent alone in its module: what `tether worker` of it imports is
checked."""

from agents import Agent

agent = Agent(name="lean-oa", model="gpt-lean-oa")
