"""The benchmark harness on a tiny run: it starts, measures and writes well-formed output.

Not a benchmark: nothing here looks at how fast anything was. One scenario
of each kind (a gateway front door, its baselines) at one small level, a
fraction of a second each, with a small scale step; the suite's own process
runs it, as `python -m bench` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--levels", "2",
    "--scenarios", "rpc,websocket,rpc-bot,floor,starlette,nginx",
    "--duration", "0.3", "--warmup", "0.2",
    "--open-duration", "0.3", "--open-think-ms", "20", "--open-rate", "200",
    "--scale-conversations", "150", "--scale-duration", "0.3", "--scale-rounds", "1",
]  # fmt: skip
ROW_KEYS = {
    "scenario", "mode", "turns_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms",
    "cpu_s_per_1k_turns", "rss_mb", "generator_cpu", "errors",
}  # fmt: skip


def test_harness_tiny_run_writes_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", *TINY, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text(encoding="utf-8"))

    closed = result["closed"]
    assert {r["scenario"] for r in closed} == {
        "rpc",
        "websocket",
        "rpc-bot",
        "floor",
        "starlette",
        "nginx",
    }
    for row in closed + result["open"]:
        assert row.keys() >= ROW_KEYS
        assert row["turns"] > 0 and not row["errors"], row
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["p999_ms"]
    assert [r["scenario"] for r in result["open"]] == ["rpc", "websocket", "rpc-bot"]
    assert result["generator"]["turns_per_s"] > 0
    assert "gateway/Starlette (navigator, RPC)" in result["ratios"]
    assert "gateway/nginx (pooled bot, RPC)" in result["ratios"]
    scale = result["scale"]
    assert scale["conversations"] == 150 and scale["rounds"][0]["idle_after"] >= 150
    assert "store_enabled" in result and result["host"]["cpus"]

    assert "p99.9 ms" in done.stdout and "CPU s/1k" in done.stdout
    assert "closed loop" in done.stderr  # the progress bar
    # The plot needs the bench extra (matplotlib), which `make test` does not install.
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not out.with_suffix(".png").exists()
        assert "matplotlib is not installed" in done.stdout + done.stderr
    else:
        assert out.with_suffix(".png").stat().st_size > 1000
