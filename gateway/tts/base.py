"""The values and the engine interface of the gateway's prompt audio.

Rules of this file:
- No I/O and no engine specifics: a `Synthesizer` turns text into a WAV file,
  `TtsService` (gateway.tts.service) decides when to call one.
- Engine parameters are engine-neutral: `speed` is a multiplier of the
  engine's normal rate (0.5 .. 2.0, from the API's SpeechRate -500 .. 500)
  and `volume` a fraction of full scale (0.0 .. 1.0, from Volume 0 .. 100,
  0.5 being the API's default). An engine maps them to its own units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.dialogue.config import TTSConfig

# SpeechRate is -500 .. 500; every 500 steps doubles or halves the speed.
RATE_STEPS_PER_DOUBLING = 500


class TtsError(Exception):
    """Synthesis failed: the engine is missing, timed out, or wrote no valid audio."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One synthesised prompt on disk, named by the hash of what it says and how."""

    name: str  # "<sha256 hex>.wav": the cache file name and the URL segment under /media/
    path: Path
    duration_ms: int
    sample_rate: int


class Synthesizer(Protocol):
    """A TTS engine: writes a PCM 16-bit mono WAV at `sample_rate` to `out`.

    `name` is part of every cache key, so two engines never share a file;
    change it when the engine's output for the same inputs changes.
    Failures raise `TtsError`; anything else is a bug in the engine.
    """

    name: str

    async def synthesize(
        self, text: str, voice: str, speed: float, volume: float, sample_rate: int, out: Path
    ) -> None: ...


def speed_of(tts: TTSConfig) -> float:
    """SpeechRate -500 .. 500 as a speed multiplier 0.5 .. 2.0 (0 is 1.0)."""
    return float(2.0 ** (tts.speech_rate / RATE_STEPS_PER_DOUBLING))


def volume_of(tts: TTSConfig) -> float:
    """Volume 0 .. 100 as a fraction 0.0 .. 1.0 (the default 50 is 0.5)."""
    return tts.volume / 100.0
