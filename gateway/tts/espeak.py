"""espeak-ng as the gateway's built-in TTS engine.

Rules of this file:
- espeak-ng (the Debian package) runs as a subprocess started with
  `asyncio.create_subprocess_exec`: no shell, the text on stdin (never in
  argv, so no quoting and no option injection), the WAV read from stdout.
  A run past `timeout` is killed and reaped, so no zombie is left behind.
- The API's TTS settings map to espeak-ng options here and only here:
  - Voice: `VOICES` below, the VoiceNavigator (Alibaba Cloud NLS) voice
    names, case-insensitive. Chinese voices read with `cmn` and English ones
    with `en-us`, each with a female (`+f3`) or male (`+m3`) variant; a
    Chinese voice given text without any CJK character reads it with `en-us`
    and the same variant (the real voices read mixed text; espeak-ng's cmn
    reads English words with Mandarin tones). A name not in the table reads
    with `cmn+f3` when the text has CJK characters, else `en-us+f3`.
  - SpeechRate -500 .. 500 arrives as `speed` = 2 ** (rate / 500) and becomes
    `-s` = 175 * speed words per minute (-500 is half speed, 500 double),
    clamped to espeak-ng's 80 .. 450.
  - Volume 0 .. 100 arrives as `volume` = Volume / 100 and becomes `-a` =
    200 * volume, 0 .. 200 (the default 50 gives espeak-ng's default, 100).
- espeak-ng speaks at 22050 Hz (the rate is read from its WAV header);
  gateway.tts.resample converts to the service's rate (8000 or 16000) and
  the file is written with `wave`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import struct
import subprocess
import wave
from pathlib import Path

from gateway.tts.base import TtsError
from gateway.tts.resample import resample

log = logging.getLogger("gateway.tts")

# VoiceNavigator (Alibaba Cloud NLS) voice name -> espeak-ng voice, language+variant.
# fmt: off
VOICES: dict[str, str] = {
    # Chinese and Chinese-English, female (children's voices included).
    "xiaoyun": "cmn+f3", "ruoxi": "cmn+f3", "siqi": "cmn+f3", "sijia": "cmn+f3", "aiqi": "cmn+f3",
    "aijia": "cmn+f3", "ninger": "cmn+f3", "ruilin": "cmn+f3", "siyue": "cmn+f3", "aiya": "cmn+f3",
    "aixia": "cmn+f3", "aimei": "cmn+f3", "aiyu": "cmn+f3", "aiyue": "cmn+f3", "aijing": "cmn+f3",
    "xiaomei": "cmn+f3", "aina": "cmn+f3", "yina": "cmn+f3", "sijing": "cmn+f3", "sitong": "cmn+f3",
    "xiaobei": "cmn+f3", "aitong": "cmn+f3", "aiwei": "cmn+f3", "aibao": "cmn+f3",
    # Chinese and Chinese-English, male.
    "xiaogang": "cmn+m3", "sicheng": "cmn+m3", "aicheng": "cmn+m3", "aida": "cmn+m3",
    # English, female and male.
    "abby": "en-us+f3", "emily": "en-us+f3", "luna": "en-us+f3", "wendy": "en-us+f3",
    "olivia": "en-us+f3",
    "harry": "en-us+m3", "andy": "en-us+m3", "eric": "en-us+m3", "luca": "en-us+m3",
    "william": "en-us+m3",
}
# fmt: on
DEFAULT_CJK_VOICE = "cmn+f3"
DEFAULT_VOICE = "en-us+f3"

NORMAL_WPM = 175
MIN_WPM, MAX_WPM = 80, 450  # espeak-ng's accepted range for -s
MAX_AMPLITUDE = 200
DEFAULT_TIMEOUT = 10.0

# Han ideographs (unified, extension A, compatibility): text that needs a Chinese voice.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def espeak_voice(voice: str, text: str) -> str:
    """The espeak-ng voice for a VoiceNavigator voice name and the text it will read."""
    mapped = VOICES.get(voice.lower())
    if mapped is not None:
        # A Chinese voice given text without a single CJK character: espeak-ng's
        # cmn would read it as English with Mandarin tones; en-us reads it better.
        if mapped.startswith("cmn+") and not _CJK.search(text):
            return "en-us" + mapped[3:]
        return mapped
    # Unknown name: pick the language from the text itself.
    return DEFAULT_CJK_VOICE if _CJK.search(text) else DEFAULT_VOICE


def espeak_wpm(speed: float) -> int:
    """Words per minute for a speed multiplier (1.0 is espeak-ng's normal 175)."""
    return max(MIN_WPM, min(MAX_WPM, round(NORMAL_WPM * speed)))


def espeak_amplitude(volume: float) -> int:
    """espeak-ng amplitude 0 .. 200 for a volume fraction 0.0 .. 1.0."""
    return max(0, min(MAX_AMPLITUDE, round(MAX_AMPLITUDE * volume)))


def ensure_espeak() -> str:
    """The espeak-ng binary, installed with apt-get when missing and we are root.

    Meant for set-up (tests, `make test`, an image build), not for a serving
    process: it blocks for as long as apt-get takes.
    """
    found = shutil.which("espeak-ng")
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise TtsError(
            "espeak-ng is not installed and this process cannot install it "
            "(needs root and apt-get): install the Debian package espeak-ng"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "espeak-ng"]):
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-400:]
            raise TtsError(f"{' '.join(args[1:])} failed ({done.returncode}): {tail}")
    found = shutil.which("espeak-ng")
    if found is None:
        raise TtsError("apt-get installed espeak-ng but no espeak-ng binary is on PATH")
    return found


def parse_wav(data: bytes) -> tuple[int, bytes]:
    """(sample rate, PCM16 mono samples) from espeak-ng's stdout WAV.

    Writing to a pipe, espeak-ng cannot go back to fill in the chunk sizes,
    so the data chunk runs to the end of the stream whatever its header says.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError("espeak-ng wrote no RIFF/WAVE header")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise TtsError("espeak-ng wrote a short fmt chunk")
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if (fmt, channels, bits) != (1, 1, 16):
                raise TtsError(f"espeak-ng wrote format {fmt}, {channels} ch, {bits} bit")
        elif chunk == b"data":
            if not rate:
                raise TtsError("espeak-ng wrote data before fmt")
            # A real size shorter than the rest is honoured; a placeholder is not.
            pcm = data[body : body + size] if size <= len(data) - body else data[body:]
            return rate, pcm[: len(pcm) & ~1]
        pos = body + size + (size & 1)
    raise TtsError("espeak-ng wrote no data chunk")


class EspeakSynthesizer:
    """The `Synthesizer` for espeak-ng; stateless apart from its counters."""

    name = "espeak-ng"

    def __init__(self, binary: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        # Resolved once; a missing binary fails each synthesis (the caller's
        # fallback plays), it does not stop the gateway from starting.
        self.binary = binary if binary is not None else shutil.which("espeak-ng")
        self.timeout = timeout
        self.runs = 0
        self.timeouts = 0
        if self.binary is None:
            log.warning("espeak-ng not found: gateway TTS prompts will fail")

    @property
    def available(self) -> bool:
        return self.binary is not None

    def command(self, text: str, voice: str, speed: float, volume: float) -> list[str]:
        """The argv for one run; the text itself goes on stdin."""
        if self.binary is None:
            raise TtsError("espeak-ng is not installed (Debian package espeak-ng)")
        return [
            self.binary,
            "--stdout",
            "-b", "1",  # stdin is UTF-8
            "-v", espeak_voice(voice, text),
            "-s", str(espeak_wpm(speed)),
            "-a", str(espeak_amplitude(volume)),
        ]  # fmt: skip

    async def synthesize(
        self, text: str, voice: str, speed: float, volume: float, sample_rate: int, out: Path
    ) -> None:
        argv = self.command(text, voice, speed, volume)
        rate, pcm = parse_wav(await self._run(argv, text.encode()))
        if not pcm:
            raise TtsError("espeak-ng produced no audio")
        samples = resample(pcm, rate, sample_rate)
        try:
            with wave.open(str(out), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(sample_rate)
                w.writeframes(samples)
        except OSError as exc:
            raise TtsError(f"cannot write {out}: {exc}") from exc

    async def _run(self, argv: list[str], stdin: bytes) -> bytes:
        """espeak-ng's stdout; killed and reaped on timeout or cancellation."""
        self.runs += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise TtsError(f"cannot run {argv[0]}: {exc}") from exc
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except TimeoutError:
            self.timeouts += 1
            raise TtsError(f"espeak-ng took longer than {self.timeout:g} s") from None
        finally:
            # Timeout or cancellation: the process may still run; kill and reap it.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            message = stderr.decode(errors="replace").strip()[-300:]
            raise TtsError(f"espeak-ng exited with {proc.returncode}: {message}")
        return stdout

    def __repr__(self) -> str:
        return f"EspeakSynthesizer({self.binary!r}, runs={self.runs}, timeouts={self.timeouts})"
