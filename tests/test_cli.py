from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from gateway.cli import main
from gateway.net.signing import rpc_v1_signature
from tests.conftest import ROOT, SECRET, Client, GatewayProcess, write_config


def test_invalid_config_exits_with_file_key_and_problem(tmp_path: Path) -> None:
    write_config(tmp_path, demo_overrides={r"^Timeout = 10$": "Timeout = 0"})
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "gateway.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "demo.toml" in proc.stderr
    assert "SilenceTimeoutConfig.Timeout" in proc.stderr
    assert "between 1 and 600" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_gateway_config_environment_names_the_file(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_CONFIG": str(tmp_path / "missing.toml")}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert (
        proc.returncode == 2 and "missing.toml" in proc.stderr and "file not found" in proc.stderr
    )


def test_url_prints_a_signed_url_the_gateway_accepts(tmp_path: Path, capsys: object) -> None:
    config = write_config(tmp_path)
    assert (
        main(
            [
                "url",
                "--config",
                str(config),
                "Action=BeginDialogue",
                "InstanceId=demo",
                "ConversationId=cli-1",
                "CallingNumber=1",
            ]
        )
        == 0
    )
    url = capsys.readouterr().out.strip()  # type: ignore[attr-defined]
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["Signature"] == rpc_v1_signature(SECRET, "GET", params)

    gw = GatewayProcess(config, tmp_path / "gw.log")
    try:
        with Client(gw.port) as c:
            r = c.raw("GET", "/?" + urlsplit(url).query)
        assert r.status == 200 and r.json["Action"] == "Broadcast"
    finally:
        gw.stop()
