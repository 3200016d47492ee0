"""The suite: generator check, closed-loop sweep, open loop, scale; one JSON-ready result.

Order of a run, all on one stand (bench.stand), gateway and baselines on
the server core, generator on the other:
1. the generator against the raw floor server (c64): how many turns per
   second it can drive, and at what share of its core;
2. the closed-loop sweep: at each concurrency level every scenario in turn
   (the order rotates from level to level), so the ratios compare slices
   seconds apart;
3. open loop: each gateway front door at the same fixed turn rate;
4. scale (bench.scale).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import scale
from bench.callgen import Load
from bench.procs import can_pin
from bench.progress import Progress
from bench.scripts import mean_turns, scripts
from bench.slices import open_warmup, run_slice
from bench.stand import stand

GATEWAY = ("rpc", "httapi", "websocket", "webhook", "asterisk", "rpc-bot")
BASELINES = ("floor", "starlette", "nginx", "bot")
SCENARIOS = GATEWAY + BASELINES
CALIBRATION_CALLS = 64


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run does; `python -m bench` builds it from its flags."""

    levels: Sequence[int] = (1, 16, 64, 256, 1024)
    scenarios: Sequence[str] = SCENARIOS
    duration: float = 6.0
    warmup: float = 1.0
    think: float = 0.0
    open_rate: float = 1000.0
    open_think: float = 0.2
    open_duration: float = 8.0
    scale_conversations: int = 10_000
    scale_rate: float = 1000.0
    scale_duration: float = 8.0
    scale_rounds: int = 2

    def steps(self) -> int:
        opened = len([s for s in self.scenarios if s in GATEWAY]) if self.open_duration else 0
        scaled = 3 + 4 * self.scale_rounds if self.scale_conversations else 0
        return 1 + len(self.levels) * len(self.scenarios) + opened + scaled


def _rotate(names: Sequence[str], k: int) -> list[str]:
    k %= len(names)
    return [*names[k:], *names[:k]]


def run(plan: Plan, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    plays = scripts()
    progress = Progress(plan.steps())
    pin = can_pin()
    out: dict[str, Any] = {
        "plan": {k: getattr(plan, k) for k in plan.__dataclass_fields__},
        "pinned": pin,
        "scripts": len(plays),
        "turns_per_call": round(mean_turns(plays), 2),
        "closed": [],
        "open": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="ivr-bench-suite-") as tmp,
        stand(Path(tmp), pin, plays) as st,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        out["store_enabled"] = st.store_enabled
        out["pids"] = st.pids
        out["response_bytes"] = len(st.body)
        seq = iter(range(1_000_000))

        def tag(prefix: str) -> str:
            return f"{prefix[:2]}{next(seq):04d}"

        progress.advance("generator against the raw floor, c64")
        calib = Load("closed", plan.duration, plan.warmup, calls=CALIBRATION_CALLS)
        row = run_slice(st, runner, "floor", calib, plays, tag("gc"))
        share = row["generator_cpu"] or 1.0
        out["generator"] = {
            **row,
            "ceiling_turns_per_s": round(row["turns_per_s"] / max(share, 0.01), 1),
        }
        for k, level in enumerate(plan.levels):
            load = Load("closed", plan.duration, plan.warmup, calls=level, think=plan.think)
            for name in _rotate(plan.scenarios, k):
                progress.advance(f"closed loop, {level} calls: {name}")
                out["closed"].append(run_slice(st, runner, name, load, plays, tag(name)))
        if plan.open_duration:
            load = Load(
                "open",
                plan.open_duration,
                open_warmup(plan.warmup, plan.open_think),
                rate=plan.open_rate,
                think=plan.open_think,
            )
            for name in [s for s in plan.scenarios if s in GATEWAY]:
                progress.advance(f"open loop, {plan.open_rate:g} turns/s: {name}")
                out["open"].append(run_slice(st, runner, name, load, plays, tag(name)))
        if plan.scale_conversations:
            out["scale"] = scale.run(
                st,
                runner,
                conversations=plan.scale_conversations,
                rate=plan.scale_rate,
                think=plan.open_think,
                duration=plan.scale_duration,
                warmup=plan.warmup,
                rounds=plan.scale_rounds,
                step=progress.advance,
            )
    progress.done()
    out["generator"]["max_share_in_sweep"] = max(
        (r["generator_cpu"] for r in out["closed"] + out["open"]), default=None
    )
    return out
