"""Measurement 2: memory held per idle conversation, in-process, no server.

The app is built from the benchmark config as the server builds it; N
conversations are begun (each with its own InitialContext dict) and given
one Dialogue turn, so each holds a last reply. Two passes, on two fresh
Gateway objects: RSS delta (/proc/self/statm) without tracemalloc, whose
own bookkeeping would inflate RSS, then a tracemalloc snapshot diff.
Runs in a child process (`python -m bench.memory`) so the load generator's
freed buffers cannot hide growth in RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from bench import ROOT, gwconfig
from gateway.app import Gateway
from gateway.dialogue.operations import BeginDialogue, Dialogue, EndDialogue
from gateway.settings import Settings, load_instances, load_settings
from gateway.store.instances import Instance

INSTANCE = "demo"
UTTERANCE = "查询余额"
TARGET_BYTES = 2048
WARM_CONVERSATIONS = 10


def _fresh(s: str) -> str:
    """An equal but distinct str, as a parsed request would carry."""
    return s.encode().decode()


def _fill(gw: Gateway, prefix: str, start: int, count: int) -> int:
    """Begin `count` conversations and give each one turn; the number that got an answer."""
    run = gw.service.run_sync
    answered = 0
    for i in range(start, start + count):
        cid = f"{prefix}-{i}"
        begin = BeginDialogue(
            calling_number=_fresh("13800000000"),
            called_number=_fresh("95555"),
            variables={"balance": f"{100 + i % 900}"},
        )
        run(INSTANCE, cid, begin, False)
        result = run(INSTANCE, cid, Dialogue(utterance=_fresh(UTTERANCE)), False)
        answered += result.outcome == "answer"
    return answered


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _gateway(settings: Settings, instances: list[Instance]) -> Gateway:
    gw = Gateway(settings, instances)
    # First-use caches are not per conversation; ending these frees their Concurrency slots.
    _fill(gw, "warm", 0, WARM_CONVERSATIONS)
    for i in range(WARM_CONVERSATIONS):
        gw.service.run_sync(INSTANCE, f"warm-{i}", EndDialogue(), False)
    gc.collect()
    return gw


def _check(gw: Gateway, n: int) -> None:
    if len(gw.sessions) != n:
        raise RuntimeError(f"{len(gw.sessions)} live conversations, expected {n}")


def rss_pass(settings: Settings, instances: list[Instance], n: int) -> dict[str, Any]:
    gw = _gateway(settings, instances)
    before = rss_bytes()
    answered = _fill(gw, "m", 0, n)
    gc.collect()
    delta = rss_bytes() - before
    _check(gw, n)
    return {
        "rss_delta_bytes": delta,
        "rss_bytes_per_conversation": round(delta / n, 1),
        "answered": answered,
    }


def _short(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def tracemalloc_pass(settings: Settings, instances: list[Instance], n: int) -> dict[str, Any]:
    gw = _gateway(settings, instances)
    ignore = (tracemalloc.Filter(False, tracemalloc.__file__),)
    tracemalloc.start()
    before = tracemalloc.take_snapshot().filter_traces(ignore)
    answered = _fill(gw, "m", 0, n)
    gc.collect()
    after = tracemalloc.take_snapshot().filter_traces(ignore)
    tracemalloc.stop()
    _check(gw, n)
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    top = [
        {
            "where": f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
            "bytes_per_conversation": round(s.size_diff / n, 1),
        }
        for s in sorted(stats, key=lambda s: -s.size_diff)[:8]
    ]
    return {
        "traced_delta_bytes": total,
        "traced_bytes_per_conversation": round(total / n, 1),
        "answered": answered,
        "top_sites": top,
    }


def measure(n: int) -> dict[str, Any]:
    """Both passes, in this process."""
    if not 1 <= n <= gwconfig.MAX_CONCURRENCY:
        cap = gwconfig.MAX_CONCURRENCY
        raise ValueError(f"conversations must be 1..{cap} (the Concurrency cap)")
    with tempfile.TemporaryDirectory(prefix="ivr-bench-mem-") as tmp:
        settings = load_settings(gwconfig.write(Path(tmp), port=0, auth=True))
        instances = load_instances(settings.instances_dir)
    rss = rss_pass(settings, instances, n)
    gc.collect()
    traced = tracemalloc_pass(settings, instances, n)
    return {
        "conversations": n,
        "target_bytes": TARGET_BYTES,
        **rss,
        **traced,
        "answered": min(rss["answered"], traced["answered"]),
    }


def run(n: int) -> dict[str, Any]:
    """`measure(n)` in a fresh child process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--conversations", str(n)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.conversations)))


if __name__ == "__main__":
    main()
