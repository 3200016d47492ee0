from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import config_path, load_instances, load_settings
from tests.conftest import ROOT, write_config


def test_shipped_config_loads_with_demo_instance() -> None:
    settings = load_settings(ROOT / "config" / "gateway.toml")
    assert settings.host == "127.0.0.1" and settings.port == 8080 and settings.auth_enabled
    assert [k.id for k in settings.access_keys] == ["demo-key"]
    [demo] = load_instances(settings.instances_dir)
    assert demo.instance_id == "demo"


def test_config_path_prefers_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", "/env/gateway.toml")
    assert config_path("/flag.toml") == Path("/flag.toml")
    assert config_path(None) == Path("/env/gateway.toml")
    monkeypatch.delenv("GATEWAY_CONFIG")
    assert config_path(None) == Path("config/gateway.toml")


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('[sessions]\nidle_timeout_seconds = "soon"', "sessions.idle_timeout_seconds", "integer"),
        ('[server]\nlog_level = "loud"', "server.log_level", "must be one of"),
        ('[[access_keys]]\nid = "demo-key"\nsecret = "x"', "access_keys[2].id", "duplicate"),
        (
            '[[access_keys]]\nid = "k"\nsecret = "s"\npolicy = "admin"',
            "access_keys[2].policy",
            "full or read-only",
        ),
        ('[store]\nwriter_idle = "yes"', "store.writer_idle", "true or false"),
        ("[store]\nwriter_nice = 20", "store.writer_nice", "between"),
    ],
)
def test_invalid_gateway_config_names_file_key_and_problem(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    config = write_config(tmp_path)
    text = config.read_text().replace(
        '[server]\nhost = "127.0.0.1"\nport = 8080\nlog_level = "debug"\n', ""
    )
    config.write_text(text + "\n" + extra + "\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(config)
    assert exc.value.file == str(config)
    assert exc.value.key == key
    assert problem in exc.value.problem


def test_store_writer_is_sched_idle_unless_configured(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)
    assert settings.store.writer_idle and settings.store.writer_nice == 19
    config.write_text(config.read_text() + "\n[store]\nwriter_idle = false\nwriter_nice = 10\n")
    settings = load_settings(config)
    assert not settings.store.writer_idle and settings.store.writer_nice == 10


def test_invalid_instance_file_is_named(tmp_path: Path) -> None:
    write_config(tmp_path, demo_overrides={r"^Threshold = 3$": "Threshold = -1"})
    with pytest.raises(ConfigError) as exc:
        load_instances(tmp_path / "instances")
    assert exc.value.file.endswith("demo.toml")
    assert exc.value.key == "UnrecognizingConfig.Threshold"


def test_duplicate_instance_ids_are_refused(tmp_path: Path) -> None:
    write_config(tmp_path)
    (tmp_path / "instances" / "copy.toml").write_text(
        (tmp_path / "instances" / "demo.toml").read_text()
    )
    with pytest.raises(ConfigError, match="duplicate InstanceId 'demo'"):
        load_instances(tmp_path / "instances")


def test_broken_toml_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
