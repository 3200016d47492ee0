"""Instances in the database: seeding once, documents round-tripping, and a
real gateway that keeps API changes across restarts and never reads the
files again."""

from __future__ import annotations

import sqlite3
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.api.navigation import navigation_fields
from gateway.store import catalog
from gateway.store.catalog import DeleteInstance, InsertInstance, ReplaceInstance
from gateway.store.db import open_database
from gateway.store.instances import parse_instance
from tests.conftest import DEMO, Client, GatewayProcess, write_config


def demo(**changes: Any) -> dict[str, Any]:
    doc = tomllib.loads(DEMO.read_text(encoding="utf-8"))
    doc.update(changes)
    return doc


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_database(tmp_path / "gateway.db")
    yield conn
    conn.close()


def apply(db: sqlite3.Connection, op: Any) -> Any:
    db.execute("BEGIN IMMEDIATE")
    result = op.apply(db)
    db.execute("COMMIT")
    return result


def test_seed_copies_the_files_once_per_database(db: sqlite3.Connection) -> None:
    assert catalog.seed(db, [demo()], 1000) is True
    assert [row.instance_id for row in catalog.load(db)] == ["demo"]
    assert catalog.meta(db, catalog.SEEDED) == "1000"
    # Later starts: nothing is copied, whatever the files say now.
    assert catalog.seed(db, [demo(InstanceId="new", Name="New")], 2000) is False
    assert [row.instance_id for row in catalog.load(db)] == ["demo"]
    # Even with every instance deleted, the database stays the source of truth.
    apply(db, DeleteInstance("demo"))
    assert catalog.seed(db, [demo()], 3000) is False
    assert catalog.load(db) == []


def test_seed_gives_a_repeated_name_its_id(db: sqlite3.Connection) -> None:
    catalog.seed(db, [demo(InstanceId="a"), demo(InstanceId="b"), demo(InstanceId="c")], 1)
    names = {row.instance_id: row.document["Name"] for row in catalog.load(db)}
    assert names == {"a": "Demo Bank", "b": "Demo Bank (b)", "c": "Demo Bank (c)"}


def test_seed_keeps_a_disabled_file_disabled(db: sqlite3.Connection) -> None:
    catalog.seed(db, [demo(Enabled=False)], 1)
    row = catalog.load_one(db, "demo")
    assert row is not None and row.status == "Disabled"
    assert parse_instance(row.document).status == "Disabled"


def test_a_stored_document_parses_to_the_same_instance_as_its_file(db: sqlite3.Connection) -> None:
    doc = demo(Chatbot="shop")
    catalog.seed(db, [doc], 5)
    row = catalog.load_one(db, "demo")
    assert row is not None
    assert (row.create_time, row.modify_time, row.modify_user_name) == (5, 5, "config")
    stored, filed = parse_instance(row.document), parse_instance(doc)
    assert navigation_fields(stored) == navigation_fields(filed)
    assert repr(stored) == repr(filed) and repr(stored.rules) == repr(filed.rules)
    assert row.document["Chatbot"] == "shop" and row.document["bot"] == doc["bot"]


def test_replace_is_whole_and_insert_refuses_a_taken_name(db: sqlite3.Connection) -> None:
    catalog.seed(db, [demo()], 1)
    changed = demo(Concurrency=7, Description="changed")
    changed["GreetingConfig"] = {"GreetingWords": "hello"}
    assert apply(db, ReplaceInstance(changed, "Disabled", 9, "alice")) == 1
    row = catalog.load_one(db, "demo")
    assert row is not None
    assert (row.status, row.modify_time, row.modify_user_name, row.create_time) == (
        "Disabled",
        9,
        "alice",
        1,
    )
    assert row.document["GreetingConfig"] == {"GreetingWords": "hello"}
    assert row.document["Concurrency"] == 7
    assert apply(db, ReplaceInstance(demo(InstanceId="gone"), "Published", 9, "alice")) == 0
    with pytest.raises(sqlite3.IntegrityError, match="Name"):
        apply(db, InsertInstance(demo(InstanceId="other"), "Published", 10, "bob"))
    db.execute("ROLLBACK")


def test_load_page_counts_and_orders_by_creation(db: sqlite3.Connection) -> None:
    for n in range(5):
        apply(db, InsertInstance(demo(InstanceId=f"z{n}", Name=f"n{n}"), "Published", 100 - n, "u"))
    total, rows = catalog.load_page(db, 1, 2)
    assert total == 5
    assert [r.instance_id for r in rows] == ["z3", "z2"]
    assert catalog.load_page(db, 10, 2) == (5, [])


# -- a real gateway, restarted on the same directory -----------------------------


def describe(c: Client, action: str, instance: str = "demo") -> dict[str, Any]:
    r = c.call({"Action": action, "InstanceId": instance})
    assert r.status == 200, r.body
    return r.json  # type: ignore[no-any-return]


def test_restart_keeps_api_changes_and_ignores_edited_files(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    g = GatewayProcess(config, tmp_path / "1.log")
    try:
        with Client(g.port) as c:
            r = c.call(
                {
                    "Action": "ModifyGreetingConfig",
                    "InstanceId": "demo",
                    "GreetingWords": "Changed by the API",
                }
            )
            assert r.status == 200, r.body
            r = c.call({"Action": "ModifyTTSConfig", "InstanceId": "demo", "Volume": "80"})
            assert r.status == 200, r.body
            before = describe(c, "DescribeNavigationConfig")
    finally:
        g.stop()
    # Edit the file and add another: neither is read again.
    demo_file = tmp_path / "instances" / "demo.toml"
    demo_file.write_text(
        demo_file.read_text(encoding="utf-8").replace("Concurrency = 100", "Concurrency = 3"),
        encoding="utf-8",
    )
    (tmp_path / "instances" / "later.toml").write_text(
        DEMO.read_text(encoding="utf-8")
        .replace('InstanceId = "demo"', 'InstanceId = "later"')
        .replace('Name = "Demo Bank"', 'Name = "Later"'),
        encoding="utf-8",
    )
    g = GatewayProcess(config, tmp_path / "2.log")
    try:
        with Client(g.port) as c:
            after = describe(c, "DescribeNavigationConfig")
            assert {**after, "RequestId": ""} == {**before, "RequestId": ""}
            assert after["GreetingConfig"]["GreetingWords"] == "Changed by the API"
            assert describe(c, "DescribeTTSConfig")["Volume"] == 80
            assert describe(c, "DescribeInstance")["Concurrency"] == 100
            r = c.call({"Action": "DescribeInstance", "InstanceId": "later"})
            assert r.status == 404 and r.json["Code"] == "InvalidInstanceId.NotFound"
            r = c.call(
                {
                    "Action": "BeginDialogue",
                    "InstanceId": "demo",
                    "ConversationId": "c1",
                    "CallingNumber": "1",
                }
            )
            assert r.json["TextResponse"] == "Changed by the API"
    finally:
        g.stop()
    stored = sqlite3.connect(tmp_path / "var" / "gateway.db")
    try:
        (navigation,) = stored.execute(
            "SELECT NavigationConfig FROM instances WHERE InstanceId = 'demo'"
        ).fetchone()
    finally:
        stored.close()
    assert orjson.loads(navigation)["GreetingConfig"]["GreetingWords"] == "Changed by the API"


def test_a_new_database_is_seeded_from_the_files_with_duplicate_names(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "instances" / "twin.toml").write_text(
        DEMO.read_text(encoding="utf-8").replace('InstanceId = "demo"', 'InstanceId = "twin"'),
        encoding="utf-8",
    )
    g = GatewayProcess(config, tmp_path / "gateway.log")
    try:
        with Client(g.port) as c:
            r = c.call({"Action": "ListInstances", "PageNumber": "1", "PageSize": "10"})
            assert r.status == 200, r.body
            names = {i["InstanceId"]: i["Name"] for i in r.json["Instances"]}
            assert names == {"demo": "Demo Bank", "twin": "Demo Bank (twin)"}
            assert {i["ModifyUserName"] for i in r.json["Instances"]} == {"config"}
    finally:
        g.stop()
