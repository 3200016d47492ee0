"""A recording test double of the `Synthesizer` interface, for the cache's tests.

The unit under test there is TtsService (the cache), not an engine, so the
engine is replaced by one that writes a real WAV file (a tone whose length
follows the text), counts its calls, and can be told to wait, fail, or
leave a half-written file behind.
"""

from __future__ import annotations

import asyncio
import math
import wave
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from gateway.tts import TtsError

MS_PER_CHAR = 50


def tone(ms: int, rate: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    n = rate * ms // 1000
    return array(
        "h", (round(amplitude * math.sin(2 * math.pi * hz * i / rate)) for i in range(n))
    ).tobytes()


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


@dataclass
class Call:
    text: str
    voice: str
    speed: float
    volume: float
    sample_rate: int
    out: Path


@dataclass
class RecordingEngine:
    name: str = "recording"
    calls: list[Call] = field(default_factory=list)
    delay: float = 0.0  # seconds to wait after writing half of the file
    fail: int = 0  # the next `fail` calls raise TtsError (after the delay)
    rate_override: int | None = None  # write this rate instead of the one asked for
    garbage: bool = False  # write bytes that are not a WAV file
    started: asyncio.Event | None = None

    async def synthesize(
        self, text: str, voice: str, speed: float, volume: float, sample_rate: int, out: Path
    ) -> None:
        self.calls.append(Call(text, voice, speed, volume, sample_rate, out))
        if self.started is not None:
            self.started.set()
        if self.garbage:
            out.write_bytes(b"this is not audio")
            return
        rate = self.rate_override or sample_rate
        pcm = tone(MS_PER_CHAR * len(text), rate)
        # Half a file first, as a slow engine streaming to disk would leave it.
        out.write_bytes(b"RIFF" + pcm[: len(pcm) // 2])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise TtsError("engine failed on purpose")
        write_wav(out, pcm, rate)
