"""Whole calls: the fake FreeSWITCH (tests/fake_freeswitch.py, mod_httapi as its
source behaves) against a real gateway process, through every navigator path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GatewayProcess, conversation_id, write_config
from tests.fake_freeswitch import Caller, Digits, FakeFreeSwitch, Silence, Speech

USER, PASSWORD = "fs", "fs-password-0123"


@pytest.fixture(scope="module")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fscalls")


@pytest.fixture(scope="module")
def gw(gw_dir: Path) -> Iterator[GatewayProcess]:
    config = write_config(
        gw_dir,
        extra=f"""
[adapters.freeswitch]
enabled = true
username = "{USER}"
password = "{PASSWORD}"
default_instance = "demo"
asr_engine = "unimrcp"
asr_grammar = "builtin:grammar/boolean"
record_calls = true
recordings_dir = "recordings"
[adapters.freeswitch.transfer]
default_agent = "1000"
agents = {{ complaints = "1002", fallbackSkillGroup = "1003", general = "1004" }}
ivrs = {{ "lost-card" = "5001", satisfaction = "5002" }}
""",
    )
    g = GatewayProcess(config, gw_dir / "gateway.log")
    yield g
    g.stop()


def call(gw: GatewayProcess, *script: object, **kw: object) -> object:
    fs = FakeFreeSwitch(
        gw.port,
        params={"instance": "demo"},
        credentials=(USER, PASSWORD),
        session_id=conversation_id(),
        **kw,  # type: ignore[arg-type]
    )
    return fs.run(Caller(list(script)))  # type: ignore[arg-type]


def test_greeting_answer_repeat_and_a_complaint_transfer(gw: GatewayProcess) -> None:
    log = call(gw, Speech("查询余额"), Speech("再说一遍"), Speech("我要投诉"))
    prompts = log.prompts  # type: ignore[attr-defined]
    assert "欢迎致电演示银行" in prompts[0]
    assert "余额为" in prompts[1]
    assert prompts[2] == prompts[1]  # the repeat replays the last prompt
    assert "转接人工客服" in prompts[3]
    outcome = log.outcome  # type: ignore[attr-defined]
    assert outcome.kind == "dial" and outcome.extension == "1002"
    assert log.exiting is not None  # type: ignore[attr-defined]


def test_unrecognized_up_to_the_final_action(gw: GatewayProcess) -> None:
    log = call(gw, Speech("lorem ipsum"), Speech("dolor sit"), Speech("amet"))
    prompts = log.prompts  # type: ignore[attr-defined]
    assert sum("没有理解" in p for p in prompts) == 2
    assert "无法处理" in prompts[-1]
    assert log.outcome.kind == "dial" and log.outcome.extension == "1003"  # type: ignore[attr-defined]


def test_silence_up_to_the_final_hangup(gw: GatewayProcess) -> None:
    log = call(gw, Silence(), Silence(), Silence())
    prompts = log.prompts  # type: ignore[attr-defined]
    assert sum("没有听到" in p for p in prompts) == 2
    assert "听不到您说话" in prompts[-1]
    outcome = log.outcome  # type: ignore[attr-defined]
    assert outcome.kind == "hangup" and outcome.cause == "NORMAL_CLEARING"


def test_a_dtmf_menu_to_an_ivr_transfer(gw: GatewayProcess) -> None:
    log = call(gw, Digits("2"), Digits("1"))
    prompts = log.prompts  # type: ignore[attr-defined]
    assert "银行卡业务" in prompts[1]
    assert "挂失" in prompts[2]
    assert log.outcome.kind == "dial" and log.outcome.extension == "5001"  # type: ignore[attr-defined]


def test_multi_digit_entry_ended_by_hash(gw: GatewayProcess) -> None:
    log = call(gw, Digits("2"), Digits("9#"), Digits("0"))
    prompts = log.prompts  # type: ignore[attr-defined]
    assert "主菜单" in prompts[2]  # 9 went back to the main menu
    assert log.outcome.extension == "1004"  # type: ignore[attr-defined]


def test_the_caller_hangs_up_and_the_recording_is_uploaded(
    gw: GatewayProcess, gw_dir: Path
) -> None:
    fs = FakeFreeSwitch(
        gw.port,
        params={"instance": "demo"},
        credentials=(USER, PASSWORD),
        session_id=conversation_id(),
    )
    log = fs.hang_up_now(Caller([Speech("营业时间"), Silence()]), 2)
    exiting = log.exiting
    assert exiting is not None and exiting.method == "POST"
    assert log.responses[-1].status == 200
    session = exiting.get("session_id")
    stored = list((gw_dir / "recordings" / "demo" / str(session)).glob("*.wav"))
    assert len(stored) == 1 and stored[0].stat().st_size > 0


@pytest.mark.parametrize("forms", ["pocketsphinx", "plain"])
def test_other_recognizer_forms_and_post(gw: GatewayProcess, forms: str) -> None:
    log = call(gw, Speech("查询余额", form=forms), Speech("再见", form=forms), method="POST")  # type: ignore[arg-type]
    assert "余额为" in log.prompts[1]  # type: ignore[attr-defined]
    assert log.outcome.kind == "hangup"  # type: ignore[attr-defined]
    assert all(r.method == "POST" for r in log.requests)  # type: ignore[attr-defined]


def test_no_conversation_is_left_live(gw: GatewayProcess) -> None:
    call(gw, Speech("再见"))
    _, _, metrics = gw.get("/metrics")
    assert 'ivrgw_active_conversations{instance="demo"} 0.0' in metrics.decode()
