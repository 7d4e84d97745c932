"""A chat turn streamed to the terminal, durably (OpenAI Agents SDK).

    python examples/streaming_chat.py "Any weather alerts in California?"

The same loop a chat UI runs over ``Runner.run_streamed``, on ``durable.run_streamed``:
text arrives as the model writes it, tool calls and handoffs as the run makes them. Kill
the process hosting the run mid-answer and the stream carries on once the step is retried;
another process can pick the stream up by run id and offset
(``(await tether.get_run(run_id)).stream_events(from_offset=...)``).

Set OPENAI_API_KEY for the real model, or OPENAI_BASE_URL for any OpenAI-compatible
server (one that does not stream works too: the answer then arrives whole).
"""

from __future__ import annotations

import asyncio
import sys

from agents import Agent, function_tool

import tether


@function_tool
def get_weather_alerts(state: str) -> str:
    """Active weather alerts for a US state, given its two-letter code (e.g. CA)."""
    return {"CA": "Heat Advisory for the Central Valley until 8 PM."}.get(state.upper(), "None.")


agent = Agent(
    name="weather-chat",
    instructions="You are a weather assistant. Use get_weather_alerts; answer briefly.",
    tools=[get_weather_alerts],
    model="gpt-4o-mini",
)


async def main() -> None:
    durable = tether.durable(agent)
    prompt = " ".join(sys.argv[1:]) or "Are there any weather alerts in California?"
    result = durable.run_streamed(prompt)
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            print(event.data.delta, end="", flush=True)
        elif event.type == "run_item_stream_event" and event.name == "tool_called":
            print(f"[calling {event.item.raw_item.name}]", flush=True)
        elif event.type == "run_item_stream_event" and event.name == "tool_output":
            print(f"[{event.item.output}]", flush=True)
        elif isinstance(event, tether.StreamRetracted):
            print("\n[the model's answer was interrupted; again:]", flush=True)
    print(f"\n(run {result.run_id}, {result.usage.get('total_tokens', 0)} tokens)")
    await (await durable.runtime()).close()


if __name__ == "__main__":
    asyncio.run(main())
