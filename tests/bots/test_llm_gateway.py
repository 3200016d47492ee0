"""The LLM bot inside a real gateway process: `[[bots]] kind = "llm"` against the
fake OpenAI-compatible server on loopback, driven through the RPC API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import DEMO, Client, GatewayProcess, conversation_id, write_config
from tests.fake_openai import Canned, FakeOpenAI, serve, text, tool_call


def script(body: dict[str, Any]) -> Canned:
    said = str(body["messages"][-1]["content"])
    if "human" in said:
        return tool_call("transfer_to_agent", reason="asked for a human", said="One moment.")
    if "bye" in said:
        return text("Goodbye. [[HANGUP]]")
    return text(f"You said: {said}.")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = serve(script=script)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[GatewayProcess]:
    d: Path = tmp_path_factory.mktemp("llm")
    config = write_config(
        d,
        extra=f"""
[[bots]]
name = "assistant"
kind = "llm"
url = "{fake.url}"
api_key = "sk-test-secret-key"
model = "fake-model"
system_prompt = "You help ${{name}} with their bank account."
transfer_action_params = {{skillGroupId = "llm"}}
""",
    )
    text_ = DEMO.read_text(encoding="utf-8").replace(
        'InstanceId = "demo"', 'InstanceId = "llm"\nChatbot = "assistant"'
    )
    (d / "instances" / "llm.toml").write_text(text_, encoding="utf-8")
    g = GatewayProcess(config, d / "gateway.log")
    yield g
    g.stop()


def test_a_conversation_with_the_llm_bot(gw: GatewayProcess, fake: FakeOpenAI) -> None:
    conv = conversation_id()
    with Client(gw.port) as c:
        r = c.call(
            {
                "Action": "BeginDialogue",
                "InstanceId": "llm",
                "ConversationId": conv,
                "CallingNumber": "1",
                "InitialContext": '{"name": "Li"}',
            }
        )
        assert r.status == 200
        r = c.call(
            {
                "Action": "Dialogue",
                "InstanceId": "llm",
                "ConversationId": conv,
                "Utterance": "what is my balance",
            }
        )
        assert r.status == 200
        assert str(r.json["TextResponse"]).startswith("You said: what is my balance.")
        seen = fake.requests[-1]
        assert seen.system == "You help Li with their bank account."
        assert seen.headers["authorization"] == "Bearer sk-test-secret-key"
        r = c.call(
            {
                "Action": "Dialogue",
                "InstanceId": "llm",
                "ConversationId": conv,
                "Utterance": "a human please",
            }
        )
        assert r.json["Action"] == "TransferToAgent"
        assert orjson.loads(r.json["ActionParams"]) == {"skillGroupId": "llm"}
        # History went with the second question.
        assert [m["role"] for m in fake.requests[-1].messages] == [
            "system",
            "user",
            "assistant",
            "user",
        ]
        r = c.call(
            {"Action": "Dialogue", "InstanceId": "llm", "ConversationId": conv, "Utterance": "bye"}
        )
        assert r.json["Action"] == "HangUp" and "[[" not in r.json["TextResponse"]
    assert "sk-test-secret-key" not in gw.logs()
