"""Instance management (seed §7, §8.1) against real gateway processes and their SQLite files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from gateway.api.instances import DEFAULT_NAVIGATION
from gateway.store.instances import MAX_CONCURRENCY
from tests.api.managed import home, ok, refused
from tests.conftest import (
    DEMO,
    KEY_ID,
    RO_KEY_ID,
    RO_SECRET,
    SECRET,
    Client,
    GatewayProcess,
    Response,
    conversation_id,
    write_config,
)
from tests.loopback import LoopbackServer, Reply, Request


def create(c: Client, name: str, concurrency: str = "10", **params: str) -> str:
    answer = ok(
        c.call({"Action": "CreateInstance", "Name": name, "Concurrency": concurrency, **params})
    )
    assert set(answer) == {"RequestId", "InstanceId"}
    return str(answer["InstanceId"])


def begin(c: Client, instance: str, conv: str | None = None) -> Response:
    return c.call(
        {
            "Action": "BeginDialogue",
            "InstanceId": instance,
            "ConversationId": conv or conversation_id(),
            "CallingNumber": "13800000000",
        }
    )


def turn(c: Client, action: str, instance: str, conv: str, **params: str) -> Response:
    return c.call({"Action": action, "InstanceId": instance, "ConversationId": conv, **params})


def stored_row(directory: Path, instance_id: str) -> sqlite3.Row | None:
    db = sqlite3.connect(f"file:{directory / 'var' / 'gateway.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM instances WHERE InstanceId = ?", (instance_id,)
        ).fetchone()
        return row
    finally:
        db.close()


# -- create, describe, list ---------------------------------------------------


def test_create_instance_is_described_listed_and_live_at_once(client: Client) -> None:
    before = int(time.time() * 1000)
    instance = create(client, "Support line", "25", Description="客服 line")
    d = ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))
    assert d["InstanceId"] == instance and len(instance) == 36
    assert d["Name"] == "Support line" and d["Description"] == "客服 line"
    assert d["Concurrency"] == 25 and isinstance(d["Concurrency"], int)
    assert d["Status"] == "Published"
    assert d["ApplicableOperations"] == ["Edit", "Disable", "Delete"]
    assert isinstance(d["ModifyTime"], int) and before <= d["ModifyTime"] <= before + 60_000
    assert d["ModifyUserName"] == "tester"
    # Live at once, with the documented default config.
    greeting = ok(begin(client, instance))
    assert greeting["TextResponse"] == DEFAULT_NAVIGATION["GreetingConfig"]["GreetingWords"]
    listed = ok(client.call({"Action": "ListInstances", "PageNumber": "1", "PageSize": "100"}))
    assert any(i["InstanceId"] == instance for i in listed["Instances"])
    assert listed["TotalCount"] == len(listed["Instances"])


def test_create_instance_default_config_runs_a_whole_conversation(client: Client) -> None:
    instance = create(client, "Defaults")
    conv = conversation_id()
    ok(begin(client, instance, conv))
    # No bot intents: three unrecognised turns, then the agent.
    actions = [
        ok(turn(client, "Dialogue", instance, conv, Utterance="blah"))["Action"] for _ in range(3)
    ]
    assert actions == ["Broadcast", "Broadcast", "TransferToAgent"]
    conv = conversation_id()
    ok(begin(client, instance, conv))
    assert (
        ok(turn(client, "Dialogue", instance, conv, Utterance="转人工"))["Action"]
        == "TransferToAgent"
    )


def test_list_instances_pages(client: Client) -> None:
    for n in range(3):
        create(client, f"Paged {n}")
    total = ok(client.call({"Action": "ListInstances", "PageNumber": "1", "PageSize": "1"}))[
        "TotalCount"
    ]
    seen = []
    for number in range(1, total + 1):
        page = ok(
            client.call({"Action": "ListInstances", "PageNumber": str(number), "PageSize": "1"})
        )
        assert (page["PageNumber"], page["PageSize"], page["TotalCount"]) == (number, 1, total)
        assert len(page["Instances"]) == 1
        seen.append(page["Instances"][0]["InstanceId"])
    assert len(set(seen)) == total
    past = ok(
        client.call({"Action": "ListInstances", "PageNumber": str(total + 1), "PageSize": "1"})
    )
    assert past["Instances"] == [] and past["TotalCount"] == total


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"PageNumber": "0", "PageSize": "10"}, "InvalidParameter"),
        ({"PageNumber": "1", "PageSize": "0"}, "InvalidParameter"),
        ({"PageNumber": "1", "PageSize": "10000"}, "InvalidParameter"),
        ({"PageNumber": "x", "PageSize": "10"}, "InvalidParameter"),
        ({"PageSize": "10"}, "MissingPageNumber"),
    ],
)
def test_list_instances_refuses_bad_pages(
    client: Client, params: dict[str, str], code: str
) -> None:
    message = refused(client.call({"Action": "ListInstances", **params}), 400, code)
    assert "Page" in message


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_CONCURRENCY + 1), "99999999999"])
def test_concurrency_out_of_bounds_is_limit_exceeded(client: Client, value: str) -> None:
    r = client.call({"Action": "CreateInstance", "Name": f"c{value}", "Concurrency": value})
    refused(r, 400, "InvalidConcurrency.LimitExceeded")
    r = client.call({"Action": "ModifyInstance", "InstanceId": "demo", "Concurrency": value})
    refused(r, 400, "InvalidConcurrency.LimitExceeded")


def test_concurrency_at_the_bound_and_bad_shapes(client: Client) -> None:
    instance = create(client, "Biggest", str(MAX_CONCURRENCY))
    d = ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))
    assert d["Concurrency"] == MAX_CONCURRENCY
    r = client.call({"Action": "CreateInstance", "Name": "shape", "Concurrency": "ten"})
    assert "Concurrency" in refused(r, 400, "InvalidParameter")
    refused(client.call({"Action": "CreateInstance", "Name": "none"}), 400, "MissingConcurrency")
    refused(client.call({"Action": "CreateInstance", "Concurrency": "1"}), 400, "MissingName")
    r = client.call({"Action": "CreateInstance", "Name": "n" * 129, "Concurrency": "1"})
    assert "Name" in refused(r, 400, "InvalidParameter")


def test_names_are_unique(client: Client) -> None:
    first = create(client, "Unique")
    refused(
        client.call({"Action": "CreateInstance", "Name": "Unique", "Concurrency": "1"}),
        400,
        "InvalidInstanceName.Duplicated",
    )
    second = create(client, "Other")
    r = client.call(
        {"Action": "ModifyInstance", "InstanceId": second, "Concurrency": "1", "Name": "Unique"}
    )
    refused(r, 400, "InvalidInstanceName.Duplicated")
    assert ok(client.call({"Action": "DescribeInstance", "InstanceId": second}))["Name"] == "Other"
    # Renaming to its own name is no conflict.
    ok(
        client.call(
            {"Action": "ModifyInstance", "InstanceId": first, "Concurrency": "1", "Name": "Unique"}
        )
    )


@pytest.mark.parametrize(
    "action",
    [
        "DescribeInstance",
        "ModifyInstance",
        "DeleteInstance",
        "EnableInstance",
        "DisableInstance",
        "AssociateChatbotInstance",
    ],
)
def test_unknown_instance_is_not_found(client: Client, action: str) -> None:
    r = client.call(
        {
            "Action": action,
            "InstanceId": "no-such-instance",
            "Concurrency": "1",
            "ChatbotInstanceId": "rules",
        }
    )
    refused(r, 404, "InvalidInstanceId.NotFound")


# -- modify, enable, disable, delete -------------------------------------------


def test_modify_instance_changes_given_fields_and_records_who(
    gateway: GatewayProcess, client: Client
) -> None:
    instance = create(client, "Mod", "3", Description="before")
    old = ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))
    time.sleep(0.01)
    ok(client.call({"Action": "ModifyInstance", "InstanceId": instance, "Concurrency": "7"}))
    d = ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))
    assert (d["Concurrency"], d["Description"], d["Name"]) == (7, "before", "Mod")
    assert d["ModifyTime"] > old["ModifyTime"]
    ok(
        client.call(
            {
                "Action": "ModifyInstance",
                "InstanceId": instance,
                "Concurrency": "7",
                "Description": "",
            }
        )
    )
    assert (
        ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))["Description"] == ""
    )
    row = stored_row(home(gateway), instance)
    assert row is not None and row["Concurrency"] == 7 and row["ModifyUserName"] == "tester"


def test_disabled_instance_refuses_begin_and_enable_restores_it(client: Client) -> None:
    instance = create(client, "Toggle")
    live = conversation_id()
    ok(begin(client, instance, live))
    ok(client.call({"Action": "DisableInstance", "InstanceId": instance}))
    d = ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))
    assert d["Status"] == "Disabled" and d["ApplicableOperations"] == ["Edit", "Enable", "Delete"]
    refused(begin(client, instance), 400, "InvalidInstanceId.Disabled")
    # The conversation begun before goes on.
    ok(turn(client, "Dialogue", instance, live, Utterance="hello"))
    ok(turn(client, "EndDialogue", instance, live))
    ok(client.call({"Action": "EnableInstance", "InstanceId": instance}))
    assert (
        ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))["Status"]
        == "Published"
    )
    ok(begin(client, instance))


def test_deleted_instance_is_gone_but_live_conversations_finish(
    gateway: GatewayProcess, client: Client
) -> None:
    instance = create(client, "Doomed")
    live = conversation_id()
    ok(begin(client, instance, live))
    ok(client.call({"Action": "DeleteInstance", "InstanceId": instance}))
    assert stored_row(home(gateway), instance) is None
    refused(
        client.call({"Action": "DescribeInstance", "InstanceId": instance}),
        404,
        "InvalidInstanceId.NotFound",
    )
    refused(begin(client, instance), 404, "InvalidInstanceId.NotFound")
    listed = ok(client.call({"Action": "ListInstances", "PageNumber": "1", "PageSize": "100"}))
    assert instance not in {i["InstanceId"] for i in listed["Instances"]}
    # The live one runs to its end on the config it began with.
    for _ in range(2):
        assert ok(turn(client, "SilenceTimeout", instance, live))["Action"] == "Broadcast"
    assert ok(turn(client, "SilenceTimeout", instance, live))["Action"] == "HangUp"
    ok(turn(client, "EndDialogue", instance, live))
    refused(
        turn(client, "Dialogue", instance, live, Utterance="x"), 404, "InvalidInstanceId.NotFound"
    )
    refused(
        client.call({"Action": "DeleteInstance", "InstanceId": instance}),
        404,
        "InvalidInstanceId.NotFound",
    )
    # Its name is free again.
    create(client, "Doomed")


def test_read_only_key_describes_and_lists_but_changes_nothing(
    gateway: GatewayProcess, client: Client
) -> None:
    instance = create(client, "Viewed")
    with Client(gateway.port, RO_KEY_ID, RO_SECRET) as viewer:
        ok(viewer.call({"Action": "DescribeInstance", "InstanceId": instance}))
        ok(viewer.call({"Action": "ListInstances", "PageNumber": "1", "PageSize": "10"}))
        for params in (
            {"Action": "CreateInstance", "Name": "ro", "Concurrency": "1"},
            {"Action": "ModifyInstance", "InstanceId": instance, "Concurrency": "2"},
            {"Action": "DisableInstance", "InstanceId": instance},
            {"Action": "EnableInstance", "InstanceId": instance},
            {"Action": "DeleteInstance", "InstanceId": instance},
        ):
            refused(viewer.call(params), 403, "Forbidden.RAM")
    d = ok(client.call({"Action": "DescribeInstance", "InstanceId": instance}))
    assert (d["Concurrency"], d["Status"]) == (10, "Published")


# -- concurrency of changes -----------------------------------------------------


def test_concurrent_modify_calls_never_mix_or_lose_a_change(gateway: GatewayProcess) -> None:
    """Parallel Modify calls on one instance: every stored and served version
    is one call's whole set of fields, and changes to different tables are
    all kept (no read-edit-write interleaves)."""
    with Client(gateway.port) as c:
        instance = create(c, "Contended")
    calls, threads_n = 12, 6
    errors: list[str] = []
    stop = threading.Event()

    def unrecognizing(n: int) -> dict[str, str]:
        return {
            "Action": "ModifyUnrecognizingConfig",
            "InstanceId": instance,
            "Prompt": f"prompt {n}",
            "FinalPrompt": f"final {n}",
            "Threshold": str(n % 9 + 1),
            "FinalAction": "HangUp" if n % 2 else "TransferToAgent",
            "FinalActionParams": orjson.dumps({"n": n}).decode(),
        }

    def whole(table: dict[str, Any]) -> bool:
        n = int(str(table["Prompt"]).removeprefix("prompt "))
        return (
            table["FinalPrompt"] == f"final {n}"
            and table["Threshold"] == n % 9 + 1
            and table["FinalAction"] == ("HangUp" if n % 2 else "TransferToAgent")
            and orjson.loads(table["FinalActionParams"]) == {"n": n}
        )

    def writer(t: int) -> None:
        with Client(gateway.port) as c:
            for i in range(calls):
                n = t * 1000 + i
                for params in (
                    unrecognizing(n),
                    {
                        "Action": "ModifyGreetingConfig",
                        "InstanceId": instance,
                        "GreetingWords": f"hi {t} {i}",
                    },
                    {
                        "Action": "ModifyInstance",
                        "InstanceId": instance,
                        "Concurrency": str(n % 50 + 1),
                        "Description": f"d {n % 50 + 1}",
                    },
                ):
                    r = c.call(params)
                    if r.status != 200:
                        errors.append(r.body.decode())

    def watcher() -> None:
        with Client(gateway.port) as c:
            while not stop.is_set():
                served = ok(c.call({"Action": "DescribeNavigationConfig", "InstanceId": instance}))
                if served["UnrecognizingConfig"]["Prompt"].startswith("prompt ") and not whole(
                    served["UnrecognizingConfig"]
                ):
                    errors.append(f"served a mix: {served['UnrecognizingConfig']}")
                row = stored_row(home(gateway), instance)
                assert row is not None
                stored = orjson.loads(row["NavigationConfig"])["UnrecognizingConfig"]
                if stored["Prompt"].startswith("prompt ") and not whole(stored):
                    errors.append(f"stored a mix: {stored}")
                if row["Description"] != f"d {row['Concurrency']}" and row["Description"] != "":
                    errors.append(f"stored instance mix: {tuple(row)}")

    writers = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    watch = threading.Thread(target=watcher)
    watch.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    stop.set()
    watch.join(30)
    assert errors == []
    with Client(gateway.port) as c:
        served = ok(c.call({"Action": "DescribeNavigationConfig", "InstanceId": instance}))
    row = stored_row(home(gateway), instance)
    assert row is not None
    stored = orjson.loads(row["NavigationConfig"])
    # One whole version, the same in memory and on disk, with every table's
    # last change kept.
    assert whole(served["UnrecognizingConfig"]) and whole(stored["UnrecognizingConfig"])
    assert served["UnrecognizingConfig"]["Prompt"] == stored["UnrecognizingConfig"]["Prompt"]
    assert served["GreetingConfig"]["GreetingWords"] == stored["GreetingConfig"]["GreetingWords"]
    assert served["GreetingConfig"]["GreetingWords"].endswith(f" {calls - 1}")
    assert row["Description"] == f"d {row['Concurrency']}"


# -- persistence ------------------------------------------------------------------

NOWHERE_BOT = """
[[bots]]
name = "nowhere"
kind = "webhook"
url = "http://bot.invalid/bot"
secret = "0123456789abcdef"
"""


def test_changes_survive_a_restart_and_the_files_are_not_read_again(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        extra=NOWHERE_BOT,
    )
    g = GatewayProcess(config, tmp_path / "1.log")
    try:
        with Client(g.port) as c:
            kept = create(c, "Kept", "4", Description="survives")
            ok(c.call({"Action": "DisableInstance", "InstanceId": kept}))
            ok(
                c.call(
                    {
                        "Action": "AssociateChatbotInstance",
                        "InstanceId": kept,
                        "ChatbotInstanceId": "nowhere",
                    }
                )
            )
            ok(c.call({"Action": "DeleteInstance", "InstanceId": "demo"}))
            before = ok(c.call({"Action": "DescribeInstance", "InstanceId": kept}))
    finally:
        g.stop()
    row = stored_row(tmp_path, kept)
    assert row is not None and orjson.loads(row["Extensions"])["Chatbot"] == "nowhere"
    # The demo file is still there; the database, not the file, decides.
    assert (tmp_path / "instances" / "demo.toml").read_text(encoding="utf-8") == DEMO.read_text(
        encoding="utf-8"
    )
    g = GatewayProcess(config, tmp_path / "2.log")
    try:
        with Client(g.port) as c:
            assert (
                ok(c.call({"Action": "DescribeInstance", "InstanceId": kept}))
                | {"RequestId": before["RequestId"]}
                == before
            )
            refused(
                c.call({"Action": "DescribeInstance", "InstanceId": "demo"}),
                404,
                "InvalidInstanceId.NotFound",
            )
            refused(begin(c, "demo"), 404, "InvalidInstanceId.NotFound")
            refused(begin(c, kept), 400, "InvalidInstanceId.Disabled")
            listed = ok(c.call({"Action": "ListInstances", "PageNumber": "1", "PageSize": "10"}))
            assert [i["InstanceId"] for i in listed["Instances"]] == [kept]
    finally:
        g.stop()


# -- remote mode ------------------------------------------------------------------


class FakeRemote:
    """A VoiceNavigator endpoint that answers every turn and records what it got."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, str]] = []

    def __call__(self, request: Request) -> Reply:
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.target).query).items()}
        self.actions.append((q["Action"], q["ConversationId"]))
        if q["Action"] == "EndDialogue":
            return Reply.json({"RequestId": "r"})
        return Reply.json(
            {
                "RequestId": "r",
                "TextResponse": f"remote {q['Action']}",
                "Interruptible": True,
                "Action": "Broadcast",
                "ActionParams": "{}",
            }
        )


def test_a_live_remote_mode_conversation_finishes_after_its_instance_is_deleted(
    tmp_path: Path,
) -> None:
    fake = FakeRemote()
    with LoopbackServer(fake) as server:
        config = write_config(
            tmp_path,
            extra=f'[[remotes]]\nname = "fake"\nurl = "http://127.0.0.1:{server.port}/"\nsignature = "none"\n',
        )
        text = DEMO.read_text(encoding="utf-8").replace(
            'InstanceId = "demo"', 'InstanceId = "faked"'
        )
        text = text.replace('Name = "Demo Bank"', 'Name = "Faked"')
        (tmp_path / "instances" / "faked.toml").write_text(
            text + '\n[remote]\nname = "fake"\ninstance = "demo"\n', encoding="utf-8"
        )
        g = GatewayProcess(config, tmp_path / "gateway.log")
        try:
            with Client(g.port) as c:
                conv = conversation_id()
                assert ok(begin(c, "faked", conv))["TextResponse"] == "remote BeginDialogue"
                ok(c.call({"Action": "DeleteInstance", "InstanceId": "faked"}))
                refused(begin(c, "faked"), 404, "InvalidInstanceId.NotFound")
                reply = ok(turn(c, "Dialogue", "faked", conv, Utterance="hello"))
                assert reply["TextResponse"] == "remote Dialogue"
                ok(turn(c, "EndDialogue", "faked", conv))
                # Ended: the conversation is forgotten with its instance.
                refused(
                    turn(c, "Dialogue", "faked", conv, Utterance="x"),
                    404,
                    "InvalidInstanceId.NotFound",
                )
            deadline = time.monotonic() + 10
            while ("EndDialogue", conv) not in fake.actions and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [a for a, cid in fake.actions if cid == conv] == [
                "BeginDialogue",
                "Dialogue",
                "EndDialogue",
            ]
        finally:
            g.stop()


# -- the official SDK -------------------------------------------------------------


def test_the_tea_sdk_manages_an_instance_and_its_config(gateway: GatewayProcess) -> None:
    from alibabacloud_tea_openapi.exceptions import ClientException
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_voicenavigator20180612 import models
    from alibabacloud_voicenavigator20180612.client import Client as SdkClient

    sdk = SdkClient(
        Config(
            access_key_id=KEY_ID,
            access_key_secret=SECRET,
            endpoint=f"127.0.0.1:{gateway.port}",
            protocol="http",
        )
    )
    made = sdk.create_instance(
        models.CreateInstanceRequest(name="From the SDK", concurrency=8, description="tea")
    ).body
    instance = made.instance_id
    sdk.modify_instance(
        models.ModifyInstanceRequest(instance_id=instance, concurrency=9, name="SDK renamed")
    )
    d = sdk.describe_instance(models.DescribeInstanceRequest(instance_id=instance)).body
    assert (d.name, d.concurrency, d.status, d.modify_user_name) == (
        "SDK renamed",
        9,
        "Published",
        "tester",
    )
    assert d.applicable_operations == ["Edit", "Disable", "Delete"]
    listed = sdk.list_instances(models.ListInstancesRequest(page_number=1, page_size=100)).body
    assert instance in {i.instance_id for i in listed.instances}
    assert listed.total_count == len(listed.instances)

    sdk.modify_greeting_config(
        models.ModifyGreetingConfigRequest(instance_id=instance, greeting_words="SDK hello")
    )
    sdk.modify_silence_timeout_config(
        models.ModifySilenceTimeoutConfigRequest(
            instance_id=instance,
            prompt="Hello?",
            timeout=15,
            threshold=2,
            final_prompt="Bye",
            final_action="HangUp",
            source_type="fixed",
        )
    )
    sdk.modify_ttsconfig(models.ModifyTTSConfigRequest(instance_id=instance, volume="70"))
    nav = sdk.describe_navigation_config(
        models.DescribeNavigationConfigRequest(instance_id=instance)
    ).body
    assert nav.greeting_config.greeting_words == "SDK hello"
    assert (nav.silence_timeout_config.timeout, nav.silence_timeout_config.threshold) == (15, 2)
    tts = sdk.describe_ttsconfig(models.DescribeTTSConfigRequest(instance_id=instance)).body
    assert (tts.voice, tts.volume, tts.speech_rate) == ("xiaoyun", 70, 0)

    sdk.disable_instance(models.DisableInstanceRequest(instance_id=instance))
    sdk.enable_instance(models.EnableInstanceRequest(instance_id=instance))
    sdk.delete_instance(models.DeleteInstanceRequest(instance_id=instance))
    with pytest.raises(ClientException) as exc:
        sdk.describe_instance(models.DescribeInstanceRequest(instance_id=instance))
    assert (exc.value.code, exc.value.status_code) == ("InvalidInstanceId.NotFound", 404)
    with pytest.raises(ClientException) as exc:
        sdk.create_instance(models.CreateInstanceRequest(name="too big", concurrency=100_001))
    assert exc.value.code == "InvalidConcurrency.LimitExceeded"
