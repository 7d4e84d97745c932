"""Secrets are not payload: a planted SecretStr, a field marked tether.Secret, a model
setting's extra_headers and the provider's API key reach the tool and the provider, and
appear in no byte of the raw history or of any store file, with encryption on or off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from agents import Agent as OpenAIAgent
from agents import ModelSettings, RunContextWrapper, function_tool
from agents import OpenAIChatCompletionsModel as OpenAIChatModelSDK
from openai import AsyncOpenAI
from pydantic import BaseModel, SecretStr
from pydantic_ai import Agent, RunContext
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import tether
from tether.core import codec, sealed
from tether.core.codec import Keyring
from tether.core.devserver import EmbeddedEngine
from tether.core.runtime import Runtime
from tether.core.store import BlobStore
from tether.core.values import pack, unpack
from tether.errors import DecryptionError
from tether.testing import ScriptedModelServer, ToolCall, Turn


class Creds(BaseModel):
    user: str
    token: SecretStr
    pin: Annotated[str, tether.Secret]


@dataclass
class SdkCreds:
    user: str
    pin: Annotated[str, tether.Secret]


@pytest.fixture(autouse=True)
def _restore_keys() -> Iterator[None]:
    before = codec.active_keyring()
    yield
    codec.configure(before)
    sealed.use_home(None)


@pytest.fixture(params=["encrypted", "plain"])
async def rt(
    request: pytest.FixtureRequest, engine: EmbeddedEngine, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Path]]:
    keyring = Keyring.generate("k1") if request.param == "encrypted" else None
    codec.configure(None)
    runtime = await Runtime.start(
        address=engine.address,
        state_dir=tmp_path / "home",
        store=BlobStore(tmp_path / "store"),
        encryption=keyring,
    )
    try:
        yield runtime, tmp_path / "store"
    finally:
        await runtime.close()


def marks() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {name: f"{name.upper()}-{tag}" for name in ("token", "pin", "header", "apikey")}


async def assert_nowhere(
    runtime: Runtime, run_id: str, root: Path, planted: dict[str, str]
) -> None:
    history = await runtime.client.get_workflow_handle(run_id).fetch_history()
    raw = history.to_json().encode() + b"".join(e.SerializeToString() for e in history.events)
    files = [p for p in root.rglob("*") if p.is_file()]  # noqa: ASYNC240
    assert len(files) > 1, "the run stored nothing"
    for what, secret in planted.items():
        assert secret.encode() not in raw, f"the {what} is in the raw history"
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"the {what} is in {path}"


async def test_pydantic_ai_secrets_reach_the_tool_and_provider_only(
    rt: tuple[Runtime, Path], task_queue: str
) -> None:
    runtime, root = rt
    planted = marks()
    seen: list[tuple[str, str]] = []
    script = [Turn.tool_calls(ToolCall("charge", {"amount": 5})), Turn.text("charged")]
    with ScriptedModelServer(script) as server:
        provider = OpenAIProvider(base_url=server.base_url, api_key=planted["apikey"])
        agent = Agent(
            OpenAIChatModel("gpt-sec", provider=provider), name="sec-pai", deps_type=Creds
        )

        @agent.tool
        def charge(ctx: RunContext[Creds], amount: int) -> str:
            """Charge the user's card."""
            seen.append((ctx.deps.token.get_secret_value(), ctx.deps.pin))
            return f"charged {amount} to {ctx.deps.user}"

        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        deps = Creds(user="ada", token=SecretStr(planted["token"]), pin=planted["pin"])
        async with runtime.worker(task_queue=task_queue):
            handle = await durable.start(
                "charge me",
                deps=deps,
                model_settings={"extra_headers": {"X-Tenant-Secret": planted["header"]}},
            )
            result = await handle.result()
        assert result.output == "charged"
        assert seen == [(planted["token"], planted["pin"])]
        assert len(server.requests) == 2
        for req in server.requests:
            assert req.headers.get("x-tenant-secret") == planted["header"]
            assert req.headers.get("authorization") == f"Bearer {planted['apikey']}"
        assert "charged 5 to ada" in server.requests[-1].body_text
    await assert_nowhere(runtime, handle.id, root, planted)
    # sealed with the encryption key when on; else with a host key made for it (0600)
    key_file = root.parent / "home" / sealed.LOCAL_KEY_NAME
    assert key_file.exists() == (runtime.keyring is None)


async def test_openai_agents_secrets_reach_the_tool_and_provider_only(
    rt: tuple[Runtime, Path], task_queue: str
) -> None:
    runtime, root = rt
    planted = marks()
    del planted["token"]
    seen: list[str] = []
    script = [Turn.tool_calls(ToolCall("lookup", {"q": "x"})), Turn.text("found")]
    with ScriptedModelServer(script) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key=planted["apikey"], max_retries=0)

        @function_tool
        def lookup(ctx: RunContextWrapper[SdkCreds], q: str) -> str:
            """Look something up."""
            seen.append(ctx.context.pin)
            return f"result for {ctx.context.user}"

        agent = OpenAIAgent(
            name="sec-oai",
            model=OpenAIChatModelSDK(model="gpt-sec", openai_client=client),
            tools=[lookup],
            model_settings=ModelSettings(extra_headers={"X-Tenant-Secret": planted["header"]}),
        )
        durable = tether.durable(agent, runtime=runtime, task_queue=task_queue, local_worker=False)
        async with runtime.worker(task_queue=task_queue):
            handle = await durable.start("look", context=SdkCreds("ada", planted["pin"]))
            result = await handle.result()
        assert result.final_output == "found"
        assert seen == [planted["pin"]]
        for req in server.requests:
            assert req.headers.get("x-tenant-secret") == planted["header"]
            assert req.headers.get("authorization") == f"Bearer {planted['apikey']}"
    await assert_nowhere(runtime, handle.id, root, planted)


def test_pack_seals_secrets_and_unpack_opens_them(tmp_path: Path) -> None:
    sealed.use_home(tmp_path / "home")
    codec.configure(None)
    value = Creds(user="ada", token=SecretStr("tok-1"), pin="0000")
    packed = pack(value, what="run context")
    assert packed["data"]["user"] == "ada"
    assert sealed.is_sealed(packed["data"]["token"]) and sealed.is_sealed(packed["data"]["pin"])
    assert "tok-1" not in str(packed) and "0000" not in str(packed)
    again = unpack(packed, Creds)
    assert isinstance(again, Creds)
    assert again.token.get_secret_value() == "tok-1" and again.pin == "0000"
    # without encryption the host key seals; it is private to this user
    key_file = tmp_path / "home" / sealed.LOCAL_KEY_NAME
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_a_secret_sealed_on_another_host_names_the_fix(tmp_path: Path) -> None:
    codec.configure(None)
    sealed.use_home(tmp_path / "a")
    packed = pack(Creds(user="u", token=SecretStr("t"), pin="p"), what="run context")
    sealed.use_home(tmp_path / "b")  # another host: another local key
    with pytest.raises(DecryptionError, match="TETHER_ENCRYPTION_KEY"):
        unpack(packed, Creds)


def test_extra_headers_are_sealed_at_any_depth(tmp_path: Path) -> None:
    sealed.use_home(tmp_path / "home")
    codec.configure(Keyring.generate("k1"))
    options: dict[str, Any] = {
        "model_settings": {"temperature": 0.1, "extra_headers": {"Authorization": "Bearer s"}},
        "run_config": {"model_settings": {"extra_query": {"api-key": "q"}}},
        "untouched": [1, 2],
    }
    out = sealed.seal_keys(options)
    assert "Bearer s" not in str(out) and "'q'" not in str(out)
    assert out["model_settings"]["temperature"] == 0.1
    assert out["untouched"] is options["untouched"]
    assert sealed.seal_keys(out) == out  # sealing twice changes nothing
    assert sealed.unseal_tree(out) == options
