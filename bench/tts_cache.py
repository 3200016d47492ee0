"""µs per TtsService cache hit, in-process: `python -m bench.tts_cache [-n N] [--repeat R]`.

A hit is what a turn pays when its prompt was synthesised before: one
`await service.prompt(text, tts)` that hashes the key and finds the Prompt
in the in-memory index. This times N such awaits inside one coroutine,
R times, and prints the best and median µs per hit (timeit-style: the
best is the least disturbed run), beside its parts (the key hash alone)
and the floor of an awaited coroutine that does nothing, so a later
benchmark can compare it with a turn's cost. The engine writes a short
silent WAV in-process: only the first call reaches it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.dialogue.config import TTSConfig
from gateway.tts import TtsService

TEXT = "您好，欢迎致电智能导航。请问有什么可以帮您？Sorry, our system is busy."


class SilentEngine:
    """A Synthesizer writing 100 ms of silence: the hits never call it."""

    name = "silent"

    async def synthesize(
        self, text: str, voice: str, speed: float, volume: float, sample_rate: int, out: Path
    ) -> None:
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate)
            w.writeframes(b"\0\0" * (sample_rate // 10))


async def _time(step: Callable[[], Awaitable[object]], n: int, repeat: int) -> list[float]:
    """µs per call of `await step()` for each of `repeat` runs of `n` calls."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(n):
            await step()
        runs.append((time.perf_counter_ns() - start) / n / 1000)
    return runs


async def _nothing() -> None:
    return None


async def measure(n: int, repeat: int) -> dict[str, list[float]]:
    tts = TTSConfig()
    with tempfile.TemporaryDirectory() as d:
        service = TtsService(Path(d), SilentEngine())
        await service.prompt(TEXT, tts)  # the one miss: fills the index

        async def hit() -> object:
            return await service.prompt(TEXT, tts)

        async def key() -> object:
            return service.name_for(TEXT, tts)

        results = {
            "cache hit (await prompt)": await _time(hit, n, repeat),
            "key hash alone": await _time(key, n, repeat),
            "empty coroutine floor": await _time(_nothing, n, repeat),
        }
        assert service.misses == 1 and service.hits == n * repeat
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="hits per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs")
    args = parser.parse_args()
    results = asyncio.run(measure(args.n, args.repeat))
    print(f"tts cache: {args.n} calls x {args.repeat} runs, text of {len(TEXT)} characters")
    print(f"{'':<28}{'best µs':>10}{'median µs':>11}")
    for label, runs in results.items():
        print(f"{label:<28}{min(runs):>10.2f}{statistics.median(runs):>11.2f}")


if __name__ == "__main__":
    main()
