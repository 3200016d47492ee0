"""TtsService (the cache) and EspeakSynthesizer (a real espeak-ng).

The espeak-ng tests run the Debian binary, installed through
`ensure_espeak()` when missing (this is how `make test` gets it on a fresh
machine). The cache tests use tests/tts/engines.py's recording engine, a
test double of the engine interface: the unit under test is the cache.
The event loop is driven with asyncio.run (the project has no async plugin).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import sys
import time
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.dialogue.config import TTSConfig
from gateway.tts import Prompt, TtsError, TtsService
from gateway.tts.espeak import (
    VOICES,
    EspeakSynthesizer,
    ensure_espeak,
    espeak_amplitude,
    espeak_voice,
    espeak_wpm,
)
from gateway.tts.resample import HAVE_AUDIOOP, resample, resample_linear
from gateway.tts.service import STALE_TEMP_SECONDS, TtsCollector
from tests.tts.engines import MS_PER_CHAR, RecordingEngine, tone

EN_10_WORDS = "Thank you for calling. How may I help you today?"
EN_LONG = (
    "Thank you for calling the customer service line. Your call is important to us. "
    "Please stay on the line and an agent will be with you shortly. "
    "You can also visit our website at any time for answers to common questions."
)
ZH = "您好，欢迎致电智能导航。请问有什么可以帮您？"
DEFAULT = TTSConfig()


def wav_info(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path), "rb") as w:
        return (
            w.getnchannels(),
            w.getsampwidth(),
            w.getframerate(),
            w.getnframes() / w.getframerate(),
        )


def rms(pcm: bytes) -> float:
    samples = array("h")
    samples.frombytes(pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def frames(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


# -- espeak-ng ----------------------------------------------------------------


@pytest.fixture(scope="module")
def espeak() -> Iterator[EspeakSynthesizer]:
    yield EspeakSynthesizer(ensure_espeak())


def synth(
    engine: EspeakSynthesizer, out: Path, text: str, **kw: object
) -> tuple[int, int, int, float]:
    args: dict[str, object] = {"voice": "xiaoyun", "speed": 1.0, "volume": 0.5, "sample_rate": 8000}
    args.update(kw)
    asyncio.run(engine.synthesize(text, out=out, **args))  # type: ignore[arg-type]
    return wav_info(out)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_espeak_writes_mono_pcm16_at_the_requested_rate(
    espeak: EspeakSynthesizer, tmp_path: Path, rate: int
) -> None:
    channels, width, framerate, seconds = synth(
        espeak, tmp_path / "a.wav", EN_10_WORDS, voice="abby", sample_rate=rate
    )
    assert (channels, width, framerate) == (1, 2, rate)
    assert 1.5 < seconds < 8.0, seconds
    assert rms(frames(tmp_path / "a.wav")) > 300  # speech, not silence


def test_espeak_longer_text_lasts_longer(espeak: EspeakSynthesizer, tmp_path: Path) -> None:
    short = synth(espeak, tmp_path / "short.wav", EN_10_WORDS)[3]
    long = synth(espeak, tmp_path / "long.wav", EN_LONG)[3]
    assert long > 2 * short


def test_espeak_speech_rate_500_is_shorter_than_minus_500(
    espeak: EspeakSynthesizer, tmp_path: Path
) -> None:
    async def main() -> tuple[Prompt, Prompt, Prompt]:
        service = TtsService(tmp_path, espeak)
        return (
            await service.prompt(EN_LONG, TTSConfig(speech_rate=500)),
            await service.prompt(EN_LONG, TTSConfig(speech_rate=0)),
            await service.prompt(EN_LONG, TTSConfig(speech_rate=-500)),
        )

    fast, normal, slow = asyncio.run(main())
    assert fast.duration_ms < normal.duration_ms < slow.duration_ms
    # -500 is half speed, 500 double: about 4x apart (pauses do not scale exactly).
    assert slow.duration_ms > 2.5 * fast.duration_ms
    for p in (fast, normal, slow):
        assert abs(wav_info(p.path)[3] * 1000 - p.duration_ms) <= 1


def test_espeak_reads_chinese(espeak: EspeakSynthesizer, tmp_path: Path) -> None:
    assert "cmn+f3" in espeak.command(ZH, "xiaoyun", 1.0, 0.5)
    assert "cmn+m3" in espeak.command(ZH, "xiaogang", 1.0, 0.5)
    channels, width, rate, seconds = synth(espeak, tmp_path / "zh.wav", ZH, voice="xiaogang")
    assert (channels, width, rate) == (1, 2, 8000)
    assert 2.0 < seconds < 15.0, seconds
    assert rms(frames(tmp_path / "zh.wav")) > 300


def test_espeak_volume_scales_amplitude(espeak: EspeakSynthesizer, tmp_path: Path) -> None:
    synth(espeak, tmp_path / "loud.wav", EN_10_WORDS, volume=1.0)
    synth(espeak, tmp_path / "quiet.wav", EN_10_WORDS, volume=0.2)
    assert rms(frames(tmp_path / "loud.wav")) > 3 * rms(frames(tmp_path / "quiet.wav"))


def test_espeak_text_goes_on_stdin_never_argv(espeak: EspeakSynthesizer, tmp_path: Path) -> None:
    text = "--help; rm -rf / $(reboot)"
    argv = espeak.command(text, "abby", 1.0, 0.5)
    assert not any(text in a or "reboot" in a for a in argv)
    # Read aloud, not taken as an option: a second or more of audio.
    assert synth(espeak, tmp_path / "dash.wav", text, voice="abby")[3] > 1.0


def test_espeak_timeout_kills_and_reaps_the_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    hang = tmp_path / "hang.sh"
    hang.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    hang.chmod(0o755)
    engine = EspeakSynthesizer(str(hang), timeout=0.5)
    start = time.monotonic()
    with pytest.raises(TtsError, match="longer than"):
        asyncio.run(engine.synthesize("hello", "abby", 1.0, 0.5, 8000, tmp_path / "x.wav"))
    assert time.monotonic() - start < 5
    pid = int(pidfile.read_text())
    # Killed and reaped: not even a zombie is left.
    assert not Path(f"/proc/{pid}").exists()
    assert engine.timeouts == 1


def test_espeak_missing_or_failing_binary_raises_tts_error(tmp_path: Path) -> None:
    missing = EspeakSynthesizer(str(tmp_path / "no-such-espeak"))
    with pytest.raises(TtsError, match="cannot run"):
        asyncio.run(missing.synthesize("hello", "abby", 1.0, 0.5, 8000, tmp_path / "x.wav"))
    failing = EspeakSynthesizer(shutil.which("false"))
    with pytest.raises(TtsError, match="exited with 1"):
        asyncio.run(failing.synthesize("hello", "abby", 1.0, 0.5, 8000, tmp_path / "x.wav"))
    echo = tmp_path / "echo.sh"
    echo.write_text("#!/bin/sh\ncat\n")  # the text back on stdout: no RIFF header
    echo.chmod(0o755)
    not_wav = EspeakSynthesizer(str(echo))
    with pytest.raises(TtsError, match="RIFF"):
        asyncio.run(not_wav.synthesize("hello", "abby", 1.0, 0.5, 8000, tmp_path / "x.wav"))


def test_espeak_mapping_table() -> None:
    assert espeak_voice("xiaoyun", ZH) == "cmn+f3"
    assert espeak_voice("Xiaogang", ZH) == "cmn+m3"  # names are case-insensitive
    assert espeak_voice("aixia", ZH) == "cmn+f3"
    assert espeak_voice("abby", "hello") == "en-us+f3"
    assert espeak_voice("harry", ZH) == "en-us+m3"  # an English voice stays English
    # A Chinese voice with no CJK at all reads English with its own gender.
    assert espeak_voice("xiaogang", "Press one for sales.") == "en-us+m3"
    assert espeak_voice("xiaoyun", "Hello 你好") == "cmn+f3"
    # Unknown names pick the language from the text.
    assert espeak_voice("nobody", ZH) == "cmn+f3"
    assert espeak_voice("nobody", "hello") == "en-us+f3"
    assert set(VOICES.values()) == {"cmn+f3", "cmn+m3", "en-us+f3", "en-us+m3"}
    # SpeechRate -500, 0, 500 through the service's speed (2 ** (rate / 500)).
    assert [espeak_wpm(2 ** (r / 500)) for r in (-500, -250, 0, 250, 500)] == [
        88,
        124,
        175,
        247,
        350,
    ]
    assert espeak_wpm(0.1) == 80 and espeak_wpm(10) == 450  # espeak-ng's range
    assert [espeak_amplitude(v / 100) for v in (0, 10, 50, 100)] == [0, 20, 100, 200]


def test_ensure_espeak_returns_the_binary() -> None:
    path = ensure_espeak()
    assert os.access(path, os.X_OK) and path == shutil.which("espeak-ng")


# -- resampling -----------------------------------------------------------------


def test_resample_keeps_speech_band_and_removes_what_would_alias() -> None:
    low, high = tone(1000, 22050, hz=1000), tone(1000, 22050, hz=6000)
    for rate in (8000, 16000):
        assert len(resample(low, 22050, rate)) // 2 == pytest.approx(rate, abs=2)
        assert rms(resample(low, 22050, rate)) == pytest.approx(rms(low), rel=0.05)
    # 6 kHz is above 8000 Hz's Nyquist: without the low-pass it folds to 2 kHz.
    assert rms(resample(high, 22050, 8000)) < rms(high) / 30
    # At 16000 it is in band and survives (ratecv's linear interpolation softens it a little).
    assert rms(resample(high, 22050, 16000)) > 0.7 * rms(high)


def test_resample_linear_fallback_converts_rate_and_keeps_level() -> None:
    low = tone(500, 22050, hz=500)
    out = resample_linear(low, 22050, 8000)
    assert len(out) // 2 == 4000
    assert rms(out) == pytest.approx(rms(low), rel=0.1)
    assert len(resample_linear(low, 22050, 44100)) // 2 == 22050
    assert resample_linear(b"", 22050, 8000) == b""


# -- the cache ------------------------------------------------------------------


def make(tmp_path: Path, **engine_kw: object) -> tuple[TtsService, RecordingEngine]:
    engine = RecordingEngine(**engine_kw)  # type: ignore[arg-type]
    return TtsService(tmp_path / "cache", engine), engine


def prompt_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_cache_second_call_is_a_hit_without_the_engine(tmp_path: Path) -> None:
    service, engine = make(tmp_path)

    async def main() -> tuple[Prompt, Prompt]:
        return await service.prompt("hello", DEFAULT), await service.prompt("hello", DEFAULT)

    first, second = asyncio.run(main())
    assert len(engine.calls) == 1
    assert second is first
    assert (service.hits, service.misses, service.failures) == (1, 1, 0)
    assert first.name == service.name_for("hello", DEFAULT) and len(first.name) == 68
    assert first.path == tmp_path / "cache" / first.name
    assert (first.sample_rate, first.duration_ms) == (8000, 5 * MS_PER_CHAR)
    assert wav_info(first.path)[:3] == (1, 2, 8000)
    call = engine.calls[0]
    assert (call.text, call.voice, call.speed, call.volume, call.sample_rate) == (
        "hello",
        "xiaoyun",
        1.0,
        0.5,
        8000,
    )


def test_cache_key_changes_with_text_voice_rate_volume_engine_and_sample_rate(
    tmp_path: Path,
) -> None:
    service, engine = make(tmp_path)
    variants = [
        ("hello", DEFAULT),
        ("hello!", DEFAULT),
        ("hello", TTSConfig(voice="xiaogang")),
        ("hello", TTSConfig(speech_rate=100)),
        ("hello", TTSConfig(volume=60)),
    ]

    async def main() -> list[Prompt]:
        return [await service.prompt(text, tts) for text, tts in variants]

    prompts = asyncio.run(main())
    assert len({p.name for p in prompts}) == 5 and len(engine.calls) == 5
    assert engine.calls[3].speed == pytest.approx(2 ** (100 / 500))
    assert engine.calls[4].volume == pytest.approx(0.6)
    # The switch's engine name (TTSConfig.Engine) does not change what we synthesise.
    assert service.name_for("hello", TTSConfig(engine="unimrcp")) == prompts[0].name
    other_engine = TtsService(tmp_path / "cache", RecordingEngine(name="another"))
    other_rate = TtsService(tmp_path / "cache", engine, sample_rate=16000)
    assert other_engine.name_for("hello", DEFAULT) != prompts[0].name
    assert other_rate.name_for("hello", DEFAULT) != prompts[0].name


def test_cache_20_concurrent_calls_run_the_engine_once(tmp_path: Path) -> None:
    service, engine = make(tmp_path, delay=0.05)

    async def main() -> list[Prompt]:
        return await asyncio.gather(*(service.prompt("same text", DEFAULT) for _ in range(20)))

    prompts = asyncio.run(main())
    assert len(engine.calls) == 1
    assert len({id(p) for p in prompts}) == 1
    assert (service.hits, service.misses, service.failures) == (19, 1, 0)


def test_cache_caller_cancelled_does_not_cancel_the_shared_synthesis(tmp_path: Path) -> None:
    service, engine = make(tmp_path, delay=0.1)

    async def main() -> Prompt:
        quitter = asyncio.create_task(service.prompt("shared", DEFAULT))
        stayer = asyncio.create_task(service.prompt("shared", DEFAULT))
        await asyncio.sleep(0.02)
        quitter.cancel()
        return await stayer

    prompt = asyncio.run(main())
    assert prompt.path.is_file() and len(engine.calls) == 1


def test_cache_failure_is_not_cached(tmp_path: Path) -> None:
    service, engine = make(tmp_path, fail=1, delay=0.02)

    async def main() -> tuple[list[BaseException | Prompt], Prompt]:
        failed = await asyncio.gather(
            *(service.prompt("flaky", DEFAULT) for _ in range(3)), return_exceptions=True
        )
        return failed, await service.prompt("flaky", DEFAULT)

    failed, retried = asyncio.run(main())
    assert all(isinstance(f, TtsError) for f in failed)
    assert len(engine.calls) == 2 and retried.path.is_file()
    assert (service.hits, service.misses, service.failures) == (0, 1, 3)
    assert prompt_names(tmp_path / "cache") == [retried.name]


def test_cache_bad_engine_output_fails_and_leaves_nothing(tmp_path: Path) -> None:
    garbage, _ = make(tmp_path / "a", garbage=True)
    wrong_rate, _ = make(tmp_path / "b", rate_override=22050)
    for service, message in ((garbage, "not a valid WAV"), (wrong_rate, "22050 Hz, not 8000")):
        with pytest.raises(TtsError, match=message):
            asyncio.run(service.prompt("hello", DEFAULT))
        assert prompt_names(service.cache_dir) == []
        assert service.failures == 1


def test_cache_empty_or_huge_text_fails_without_the_engine(tmp_path: Path) -> None:
    service, engine = make(tmp_path)
    for text in ("", "  \n", "x" * 5001, "bad \ud800 surrogate"):
        with pytest.raises(TtsError):
            asyncio.run(service.prompt(text, DEFAULT))
    assert engine.calls == [] and service.failures == 4


def test_cache_writes_a_temp_file_then_replaces_so_no_partial_file_is_visible(
    tmp_path: Path,
) -> None:
    service, _ = make(tmp_path, delay=0.2)
    name = service.name_for("slow", DEFAULT)
    seen: list[list[str]] = []

    async def main() -> Prompt:
        task = asyncio.create_task(service.prompt("slow", DEFAULT))
        await asyncio.sleep(0.1)  # the engine has written half a file and waits
        seen.append(prompt_names(service.cache_dir))
        assert service.lookup(name) is None
        assert not (service.cache_dir / name).exists()
        return await task

    prompt = asyncio.run(main())
    [during] = seen
    assert len(during) == 1 and during[0].startswith(".") and during[0].endswith(".tmp")
    assert name not in during
    assert prompt_names(service.cache_dir) == [name]
    assert service.lookup(name) == prompt.path
    # A failure half-way through leaves nothing at all.
    failing, _ = make(tmp_path / "f", fail=1, delay=0.05)
    with pytest.raises(TtsError):
        asyncio.run(failing.prompt("slow", DEFAULT))
    assert prompt_names(failing.cache_dir) == []


def test_cache_restart_finds_existing_files_without_synthesising(tmp_path: Path) -> None:
    first, _ = make(tmp_path)
    made = asyncio.run(first.prompt("remember me", DEFAULT))
    restarted, engine = make(tmp_path)
    assert restarted.lookup(made.name) == made.path  # before any prompt(): from disk

    again = asyncio.run(restarted.prompt("remember me", DEFAULT))
    assert engine.calls == []
    assert again == made
    assert (restarted.hits, restarted.misses) == (1, 0)
    # Written by another process after this one's scan: found on disk, not made again.
    later = asyncio.run(first.prompt("made elsewhere", DEFAULT))
    assert asyncio.run(restarted.prompt("made elsewhere", DEFAULT)) == later
    assert engine.calls == []


def test_cache_scan_skips_junk_and_removes_only_stale_temp_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    stale, fresh = cache / ".abc.1.x.tmp", cache / ".def.2.y.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    broken = cache / ("0" * 64 + ".wav")
    broken.write_bytes(b"RIFF junk")
    (cache / "README").write_text("not a prompt")
    service, engine = make(tmp_path)
    asyncio.run(service.prompt("hello", DEFAULT))
    assert not stale.exists() and fresh.exists() and broken.exists()
    assert len(engine.calls) == 1


def test_cache_lookup_accepts_only_well_formed_existing_names(tmp_path: Path) -> None:
    service, _ = make(tmp_path)
    prompt = asyncio.run(service.prompt("hello", DEFAULT))
    assert service.lookup(prompt.name) == prompt.path
    (service.cache_dir / "x.wav").write_bytes(b"")
    for bad in ("x.wav", "../etc/passwd", prompt.name.upper(), prompt.name[:-4], prompt.name + "/",
                "/" + prompt.name, "a" * 64 + ".wav", "", prompt.name[1:]):  # fmt: skip
        assert service.lookup(bad) is None, bad


def test_cache_aclose_cancels_syntheses_and_removes_temp_files(tmp_path: Path) -> None:
    service, _ = make(tmp_path, delay=5)

    async def main() -> BaseException | Prompt:
        task = asyncio.create_task(service.prompt("never", DEFAULT))
        await asyncio.sleep(0.05)
        await service.aclose()
        [result] = await asyncio.gather(task, return_exceptions=True)
        return result

    assert isinstance(asyncio.run(main()), asyncio.CancelledError)
    assert prompt_names(service.cache_dir) == []
    assert "in_flight=0" in repr(service)

    # Cancelled before it ever ran: still forgotten, so the next call starts afresh.
    async def unstarted() -> None:
        task = asyncio.create_task(service.prompt("never", DEFAULT))
        await asyncio.sleep(0)  # prompt() has started the synthesis task, which has not run
        await service.aclose()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(unstarted())
    assert "in_flight=0" in repr(service)


def test_cache_unusable_directory_is_a_tts_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    service = TtsService(tmp_path / "file" / "cache", RecordingEngine())
    with pytest.raises(TtsError, match="cache directory"):
        asyncio.run(service.prompt("hello", DEFAULT))
    with pytest.raises(ValueError):
        TtsService(tmp_path, RecordingEngine(), sample_rate=4000)


def test_collector_exposes_requests_and_synthesis_seconds(tmp_path: Path) -> None:
    service, _ = make(tmp_path, fail=1)

    async def main() -> None:
        with pytest.raises(TtsError):
            await service.prompt("a", DEFAULT)
        await service.prompt("a", DEFAULT)
        await service.prompt("a", DEFAULT)

    asyncio.run(main())
    registry = CollectorRegistry()
    registry.register(TtsCollector(service))
    text = generate_latest(registry).decode()
    assert 'ivrgw_tts_requests_total{result="hit"} 1.0' in text
    assert 'ivrgw_tts_requests_total{result="miss"} 1.0' in text
    assert 'ivrgw_tts_requests_total{result="failure"} 1.0' in text
    assert "ivrgw_tts_synthesis_seconds_total " in text
    assert service.synth_seconds_total > 0
    assert "hits=1, misses=1, failures=1" in repr(TtsCollector(service))


def test_python_has_audioop_or_the_fallback_is_used() -> None:
    assert HAVE_AUDIOOP is (sys.version_info < (3, 13))


def test_cache_bound_evicts_least_recently_used_and_survives_a_restart(tmp_path: Path) -> None:
    engine = RecordingEngine()
    # Each 4-character text is 4 * MS_PER_CHAR of 8 kHz PCM16 plus a 44-byte header.
    size = 44 + 4 * MS_PER_CHAR * 8 * 2
    service = TtsService(tmp_path / "cache", engine, max_bytes=3 * size)

    async def say(s: TtsService, *texts: str) -> list[Prompt]:
        return [await s.prompt(t, DEFAULT) for t in texts]

    a, b, c = asyncio.run(say(service, "aaaa", "bbbb", "cccc"))
    assert service.bytes == 3 * size and service.evictions == 0
    # "aaaa" is used again, so "bbbb" is now the least recently used.
    asyncio.run(say(service, "aaaa", "dddd"))
    # Over the bound: evicted down to 90 % of it (two prompts left), LRU first.
    assert not b.path.exists() and not c.path.exists()
    assert a.path.exists()
    assert service.evictions == 2 and service.bytes == 2 * size
    assert sorted(prompt_names(tmp_path / "cache")) == sorted(
        [a.name, service.name_for("dddd", DEFAULT)]
    )
    # An evicted prompt is made again when asked for.
    calls = len(engine.calls)
    asyncio.run(say(service, "bbbb"))
    assert len(engine.calls) == calls + 1
    registry = CollectorRegistry()
    registry.register(TtsCollector(service))
    text = generate_latest(registry).decode()
    assert "ivrgw_tts_evictions_total 2.0" in text
    assert f"ivrgw_tts_cache_bytes {float(3 * size)}" in text
    # A restart with a smaller bound trims what it finds, oldest files first.
    os.utime(a.path, (1, 1))
    smaller = TtsService(tmp_path / "cache", engine, max_bytes=int(1.5 * size))
    asyncio.run(say(smaller, "eeee"))
    assert not a.path.exists()
    assert smaller.bytes <= 1.5 * size
