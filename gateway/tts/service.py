"""TtsService: prompts synthesised once, cached on disk by what they say and how.

Rules of this file:
- A prompt's file name is sha256 over (key version, engine name, sample
  rate, voice, SpeechRate, Volume, text), hex, plus ".wav". The same inputs
  always give the same name, so the file never changes once written and
  may be cached by anyone downstream (Asterisk, an HTTP cache).
- The hit path is one hash, one dict lookup and the return of a frozen
  `Prompt` kept in the index: no file access, no await of anything slow.
- The index is filled lazily: the first miss scans the cache directory (in
  a thread), so a restart finds earlier prompts without synthesising them
  again. A name missing from the index is also looked for on disk before
  synthesising, in case another process sharing the directory wrote it.
- Concurrent requests for one name share one in-flight task; a caller that
  gives up (cancelled) does not cancel the synthesis for the others.
- The engine writes to a temporary name in the cache directory that never
  matches a prompt name, then `os.replace` moves it into place: a reader
  sees the whole file or none. Failures are not cached; the next request
  tries again.
- With `max_bytes`, the cache is bounded: when a new prompt takes it over
  the bound, the least recently used prompts are deleted until it is back
  under 90 % of it (never the prompt just made). A restart orders what it
  finds by file age. A switch that asks for an evicted file gets 404, and
  the next turn that needs the prompt makes it again.
- Counters count requests: each `prompt()` call is exactly one of a hit (the
  file existed or another call was making it), a miss (this call made it)
  or a failure (it raised). `TtsCollector` exposes them at scrape time as
  `ivrgw_tts_requests_total{result="hit|miss|failure"}` and
  `ivrgw_tts_synthesis_seconds_total` (engine time, failures included).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import time
import uuid
import wave
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.dialogue.config import TTSConfig
from gateway.tts.base import Prompt, Synthesizer, TtsError, speed_of, volume_of

log = logging.getLogger("gateway.tts")

KEY_VERSION = 1  # bump when the meaning of a key changes; old files are then never hit
NAME = re.compile(r"[0-9a-f]{64}\.wav")
MAX_TEXT_CHARS = 5000
MIN_RATE, MAX_RATE = 8000, 48000
STALE_TEMP_SECONDS = 600.0  # temporary files older than this are left-overs of a crash


def read_prompt(name: str, path: Path) -> Prompt:
    """A Prompt for a PCM16 mono WAV file, from its header only."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width = w.getnchannels(), w.getsampwidth()
            frames, rate = w.getnframes(), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise TtsError(f"{path.name} is not a valid WAV file: {exc}") from exc
    if channels != 1 or width != 2:
        raise TtsError(f"{path.name} is {channels} channel(s) of {8 * width} bit, not mono PCM16")
    return Prompt(name, path, round(frames * 1000 / rate), rate)


def scan_dir(directory: Path) -> dict[str, tuple[Prompt, int]]:
    """Every valid prompt file in `directory` (created if missing) with its size, oldest
    first; stale temp files removed."""
    directory.mkdir(parents=True, exist_ok=True)
    found: dict[str, tuple[Prompt, int, float]] = {}
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            if NAME.fullmatch(entry.name):
                try:
                    st = entry.stat()
                    prompt = read_prompt(entry.name, Path(entry.path))
                    found[entry.name] = (prompt, st.st_size, st.st_mtime)
                except (TtsError, OSError) as exc:
                    # Skipped, not deleted: the next request for it makes it again.
                    log.warning("ignoring cached prompt %s: %s", entry.name, exc)
            elif entry.name.endswith(".tmp") and entry.name.startswith("."):
                # Another process may be writing this one right now; only old ones go.
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                        os.unlink(entry.path)
    ordered = sorted(found.items(), key=lambda item: item[1][2])
    return {name: (prompt, size) for name, (prompt, size, _) in ordered}


class TtsService:
    """Prompts for (text, TTSConfig), synthesised by `engine` at `sample_rate`."""

    def __init__(
        self,
        cache_dir: Path,
        engine: Synthesizer,
        sample_rate: int = 8000,
        max_bytes: int | None = None,
    ) -> None:
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate must be {MIN_RATE} .. {MAX_RATE}, got {sample_rate}")
        self.cache_dir = Path(cache_dir)
        self.engine = engine
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self._engine_name = engine.name
        # Least recently used first.
        self._index: OrderedDict[str, Prompt] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.bytes = 0
        self.evictions = 0
        self._scan: asyncio.Future[dict[str, tuple[Prompt, int]]] | None = None
        self._scanned = False
        self._inflight: dict[str, asyncio.Task[tuple[Prompt, bool]]] = {}
        self.hits = 0
        self.misses = 0
        self.failures = 0
        self.synth_seconds_total = 0.0

    def name_for(self, text: str, tts: TTSConfig) -> str:
        """The cache file name for `text` spoken with `tts` by this service's engine and rate."""
        try:
            key = orjson.dumps(
                (
                    KEY_VERSION,
                    self._engine_name,
                    self.sample_rate,
                    tts.voice,
                    tts.speech_rate,
                    tts.volume,
                    text,
                )
            )
        except orjson.JSONEncodeError:
            # Lone surrogates: not text any engine could read.
            raise TtsError("the text is not valid Unicode") from None
        return hashlib.sha256(key).hexdigest() + ".wav"

    async def prompt(self, text: str, tts: TTSConfig) -> Prompt:
        """The prompt for `text` with `tts`, synthesised on first use; raises TtsError."""
        try:
            name = self.name_for(text, tts)
        except TtsError:
            self.failures += 1
            raise
        prompt = self._index.get(name)
        if prompt is not None:
            self.hits += 1
            self._index.move_to_end(name)
            return prompt
        return await self._miss(name, text, tts)

    def lookup(self, name: str) -> Path | None:
        """The file for a prompt name, if the name is well-formed and the file exists."""
        prompt = self._index.get(name)
        if prompt is not None:
            return prompt.path
        # Not made here (yet): another process sharing the directory may have made it.
        if NAME.fullmatch(name) is None:
            return None
        path = self.cache_dir / name
        return path if path.is_file() else None

    async def _miss(self, name: str, text: str, tts: TTSConfig) -> Prompt:
        try:
            if not self._scanned:
                await self._load()
                found = self._index.get(name)
                if found is not None:
                    self.hits += 1
                    return found
            task = self._inflight.get(name)
            first = task is None
            if task is None:
                if not text.strip():
                    raise TtsError("nothing to say: the text is empty")
                if len(text) > MAX_TEXT_CHARS:
                    raise TtsError(f"text longer than {MAX_TEXT_CHARS} characters")
                task = asyncio.ensure_future(self._produce(name, text, tts))
                task.add_done_callback(_retrieve)
                task.add_done_callback(functools.partial(self._settle, name))
                self._inflight[name] = task
            # shield: a caller hanging up must not cancel the synthesis others wait on.
            prompt, made = await asyncio.shield(task)
        except Exception:
            self.failures += 1
            raise
        if first and made:
            self.misses += 1
        else:
            self.hits += 1
        return prompt

    async def _load(self) -> None:
        """Fill the index from the cache directory, once, off the event loop."""
        if self._scan is None:
            self._scan = asyncio.ensure_future(asyncio.to_thread(scan_dir, self.cache_dir))
            self._scan.add_done_callback(_retrieve)
        scan = self._scan
        try:
            found = await asyncio.shield(scan)
        except OSError as exc:
            # An unusable directory: forget the attempt so a later request retries.
            if self._scan is scan:
                self._scan = None
            raise TtsError(f"cache directory {self.cache_dir}: {exc}") from exc
        if not self._scanned:
            made_meanwhile = list(self._index.items())
            self._index.clear()
            for name, (prompt, size) in found.items():
                self._add(name, prompt, size)
            for name, prompt in made_meanwhile:
                self._add(name, prompt, self._sizes.get(name, 0))
            self._scanned = True
            self._evict(None)
            log.info("tts cache loaded", extra={"fields": {"prompts": len(found)}})

    async def _produce(self, name: str, text: str, tts: TTSConfig) -> tuple[Prompt, bool]:
        """Synthesise `name` into place; (prompt, True) if made here, False if found on disk."""
        path = self.cache_dir / name
        tmp = self.cache_dir / f".{name[:16]}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            try:
                found = read_prompt(name, path)
            except FileNotFoundError:
                pass
            except TtsError as exc:
                # Damaged somehow (the replace makes this unlikely): make it again over it.
                log.warning("replacing cached prompt %s: %s", name, exc)
            else:
                self._add(name, found, _size(path))
                self._evict(name)
                return found, False
            start = time.perf_counter()
            try:
                await self.engine.synthesize(
                    text, tts.voice, speed_of(tts), volume_of(tts), self.sample_rate, tmp
                )
            finally:
                self.synth_seconds_total += time.perf_counter() - start
            made = read_prompt(name, tmp)
            if made.sample_rate != self.sample_rate:
                wrote = f"{self._engine_name} wrote {made.sample_rate} Hz"
                raise TtsError(f"{wrote}, not {self.sample_rate}")
            os.replace(tmp, path)
        except OSError as exc:
            raise TtsError(f"{self._engine_name}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            # Settled before the task completes, so a later call never joins a failed task.
            self._inflight.pop(name, None)
        prompt = Prompt(name, path, made.duration_ms, made.sample_rate)
        self._add(name, prompt, _size(path))
        self._evict(name)
        return prompt, True

    def _add(self, name: str, prompt: Prompt, size: int) -> None:
        self.bytes += size - self._sizes.get(name, 0)
        self._sizes[name] = size
        self._index[name] = prompt
        self._index.move_to_end(name)

    def _evict(self, keep: str | None) -> None:
        """Back under 90 % of max_bytes, least recently used first, sparing `keep`."""
        if self.max_bytes is None or self.bytes <= self.max_bytes:
            return
        target = self.max_bytes * 0.9
        for name in list(self._index):
            if self.bytes <= target:
                break
            if name == keep or name in self._inflight:
                continue
            prompt = self._index.pop(name)
            self.bytes -= self._sizes.pop(name, 0)
            self.evictions += 1
            with contextlib.suppress(OSError):
                os.unlink(prompt.path)

    def _settle(self, name: str, task: asyncio.Future[Any]) -> None:
        """Drop a finished task; `_produce` does it first unless it was cancelled unstarted."""
        if self._inflight.get(name) is task:
            del self._inflight[name]

    async def aclose(self) -> None:
        """Cancel syntheses still running (their temp files are removed)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        return (
            f"TtsService({self._engine_name!r}, {str(self.cache_dir)!r}, rate={self.sample_rate}, "
            f"cached={len(self._index)}, in_flight={len(self._inflight)}, hits={self.hits}, "
            f"misses={self.misses}, failures={self.failures})"
        )


class TtsCollector(Collector):
    """A TtsService's counters for Prometheus: `registry.register(TtsCollector(service))`."""

    def __init__(self, service: TtsService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        requests = CounterMetricFamily(
            "ivrgw_tts_requests",
            "Gateway TTS prompt requests, by result (hit: already cached or being made).",
            labels=("result",),
        )
        requests.add_metric(["hit"], s.hits)
        requests.add_metric(["miss"], s.misses)
        requests.add_metric(["failure"], s.failures)
        yield requests
        yield CounterMetricFamily(
            "ivrgw_tts_synthesis_seconds",
            "Time spent synthesising gateway TTS prompts.",
            value=s.synth_seconds_total,
        )
        yield CounterMetricFamily(
            "ivrgw_tts_evictions",
            "Cached prompts deleted to keep the TTS cache under its size bound.",
            value=s.evictions,
        )
        yield GaugeMetricFamily(
            "ivrgw_tts_cache_bytes", "Bytes of prompt files in the TTS cache.", value=s.bytes
        )

    def __repr__(self) -> str:
        return f"TtsCollector({self.service!r})"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as seen: every waiter may have gone."""
    if not future.cancelled():
        future.exception()
