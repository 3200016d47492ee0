"""Whole-call recordings through ARI: a snoop channel recorded, fetched when the call ends.

Why a snoop channel: `POST /channels/{id}/record` is a command on the
channel's Stasis control queue (res_stasis_recording.c sends `record_file`
with stasis_app_send_command_async, and record_file runs
ast_play_and_record_full until the recording ends), so every prompt queued
after it would wait until the recording stopped. A mixing bridge cannot hold
the call either: record_file refuses a channel in a bridge, and prompts
played to one bridged channel are not in the bridge's mix. A snoop channel
(`POST /channels/{id}/snoop?spy=both`) taps what the caller says and what the
caller hears through an audiohook, enters our Stasis app as a channel of its
own, and is recorded there while the call's own control stays free for
prompts. When the caller hangs up, the audiohook goes and the snoop channel
hangs up by itself, which ends the recording (RecordingFinished, `done`).

Rules of this file:
- Nothing here ever fails a call: every REST failure, timeout or missing
  event is logged and counted by outcome (`ivrgw_ari_recordings_total`).
- `attach` (one REST call) runs before the call's first prompt, so the tap is
  in place before anything plays; the rest (wait for the snoop's StasisStart,
  then `record`) runs beside the call.
- `finish` runs after the call ends, off the call's task: stop the live
  recording if it still runs, wait for RecordingFinished, hang the snoop
  channel up, stream `GET /recordings/stored/{name}/file` to
  `<recordings_dir>/<instance>/<conversation>/<name>.<format>`, then
  `DELETE /recordings/stored/{name}` so Asterisk's spool does not fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.asterisk import codec
from adapters.asterisk.ari import AriStatus
from gateway import errors

if TYPE_CHECKING:
    from adapters.asterisk.ari import AriClient

log = logging.getLogger("adapters.asterisk")

LINK_KIND = "recordings-asterisk"
SNOOP_WAIT = 5.0  # for the snoop channel's StasisStart
FINISH_WAIT = 10.0  # for RecordingFinished after the call ended
FETCH_TIMEOUT = 300.0  # one stored file, streamed
FORMATS = ("wav", "wav16", "gsm", "ulaw", "alaw", "sln", "sln16", "g722")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
OUTCOMES = ("saved", "start_failed", "not_finished", "fetch_failed", "delete_failed")


def safe(text: str) -> str:
    """A file-name segment: characters outside A-Z a-z 0-9 . _ - become `_`."""
    return _SAFE.sub("_", text) or "_"


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    directory: Path
    format: str
    max_bytes: int


class Counts:
    """Recordings of one Asterisk by outcome, for the collector."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.by_outcome = dict.fromkeys(OUTCOMES, 0)

    def add(self, outcome: str) -> None:
        self.by_outcome[outcome] += 1

    def __repr__(self) -> str:
        return f"Counts({self.server}: {self.by_outcome})"


class CallRecording:
    """One call's recording: its snoop channel, its LiveRecording, its file."""

    def __init__(
        self,
        ari: AriClient,
        config: RecordingConfig,
        counts: Counts,
        channel_id: str,
        conversation: str,
        instance_id: str,
    ) -> None:
        self.ari = ari
        self.config = config
        self.counts = counts
        self.channel_id = channel_id
        self.conversation = conversation
        self.instance_id = instance_id
        self.snoop_id = f"ivrgw-snoop-{channel_id}"
        self.name = f"ivrgw-{safe(channel_id)}"
        self.state = ""  # the LiveRecording's last state, from its events
        self.started = False  # Asterisk accepted the record request (201)
        self.failed = False  # counted already: nothing more to do at the end
        self.in_stasis = asyncio.Event()
        self.finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def relative(self) -> Path:
        """Where the file goes, under the recordings directory."""
        return (
            Path(safe(self.instance_id))
            / safe(self.conversation)
            / f"{self.name}.{self.config.format}"
        )

    # -- events (routed by the snoop channel's id) ------------------------------

    def on_event(self, event: codec.Event) -> None:
        if isinstance(event, codec.StasisStart):
            self.in_stasis.set()
        elif isinstance(event, codec.RecordingEvent) and event.name == self.name:
            self.state = event.state
            if event.state in ("done", "canceled", "failed"):
                if event.state == "failed":
                    log.warning(
                        "ARI recording failed",
                        extra={"fields": {"recording": self.name, "cause": event.cause}},
                    )
                self.finished.set()

    # -- the start --------------------------------------------------------------

    async def attach(self) -> bool:
        """Tap the call with a snoop channel in our app; False (counted) if refused."""
        try:
            await self.ari.rest(
                "POST",
                f"/channels/{self.channel_id}/snoop",
                {
                    "spy": "both",
                    "whisper": "none",
                    "app": self.ari.app,
                    "appArgs": "ivrgw-recording",
                    "snoopId": self.snoop_id,
                },
            )
        except (AriStatus, errors.BackendError) as exc:
            self._fail("start_failed", "snoop", exc)
            return False
        self._task = asyncio.create_task(self._record(), name=f"ari-record-{self.channel_id}")
        return True

    async def _record(self) -> None:
        try:
            # record needs the snoop channel's Stasis control, which exists once
            # its StasisStart is out (the snoop REST answer can come first).
            await asyncio.wait_for(self.in_stasis.wait(), SNOOP_WAIT)
            await self.ari.rest(
                "POST",
                f"/channels/{self.snoop_id}/record",
                {
                    "name": self.name,
                    "format": self.config.format,
                    "ifExists": "fail",
                    "beep": "false",
                    "terminateOn": "none",
                    "maxDurationSeconds": "0",
                    "maxSilenceSeconds": "0",
                },
            )
            self.started = True
        except TimeoutError:
            self._fail("start_failed", "snoop StasisStart", None)
        except (AriStatus, errors.BackendError) as exc:
            self._fail("start_failed", "record", exc)

    # -- the end ----------------------------------------------------------------

    async def finish(self) -> Path | None:
        """After the call: the recording saved under the directory, or None (counted)."""
        if self._task is not None and not self._task.done():
            # Still waiting to start: the call was shorter than the snoop's start.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if not self.failed:
                self._fail("start_failed", "call ended first", None)
        try:
            if self.started and not self.finished.is_set():
                await self._stop()
        finally:
            await self._hang_up_snoop()
        if self.failed:
            return None
        if self.state != "done":
            self._fail("not_finished", f"state {self.state or 'unknown'}", None)
            return None
        target = self.config.directory / self.relative
        path = f"/recordings/stored/{self.name}"
        try:
            size = await self.ari.download(
                path + "/file", target, self.config.max_bytes, FETCH_TIMEOUT
            )
        except (AriStatus, errors.BackendError, OSError) as exc:
            self._fail("fetch_failed", "file", exc)
            return None
        try:
            await self.ari.rest("DELETE", path)
        except (AriStatus, errors.BackendError) as exc:
            # The file is ours already; the spool keeps a copy until someone cleans it.
            self.counts.add("delete_failed")
            log.warning(
                "ARI stored recording not deleted",
                extra={"fields": {"recording": self.name, "error": _why(exc)}},
            )
        self.counts.add("saved")
        log.info(
            "recording stored",
            extra={"fields": {"recording": self.name, "file": str(target), "bytes": size}},
        )
        return target

    async def _stop(self) -> None:
        try:
            await self.ari.rest("POST", f"/recordings/live/{self.name}/stop")
        except AriStatus as exc:
            # 404: already over and gone; 409: over, not yet gone. Either way
            # RecordingFinished is out or on its way.
            if exc.status not in (404, 409):
                log.warning(
                    "ARI recording not stopped",
                    extra={"fields": {"recording": self.name, "status": exc.status}},
                )
        except errors.BackendError as exc:
            log.warning(
                "ARI recording not stopped",
                extra={"fields": {"recording": self.name, "error": exc.kind}},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), FINISH_WAIT)

    async def _hang_up_snoop(self) -> None:
        """The snoop channel outlives a transferred call: hang it up (404: gone already)."""
        with contextlib.suppress(AriStatus, errors.BackendError):
            await self.ari.rest("DELETE", f"/channels/{self.snoop_id}")

    def _fail(self, outcome: str, step: str, exc: BaseException | None) -> None:
        self.failed = True
        self.counts.add(outcome)
        log.warning(
            "ARI recording lost",
            extra={
                "fields": {
                    "recording": self.name,
                    "outcome": outcome,
                    "step": step,
                    "error": _why(exc),
                }
            },
        )

    def __repr__(self) -> str:
        return f"CallRecording({self.name!r}, state={self.state!r}, started={self.started})"


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, AriStatus):
        return f"{exc.status} {exc.message}"
    if isinstance(exc, errors.BackendError):
        return exc.kind
    return "" if exc is None else type(exc).__name__


class RecordingCollector(Collector):
    def __init__(self, counts: list[Counts]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "ivrgw_ari_recordings",
            "Whole-call ARI recordings by outcome (saved, or the step that lost it).",
            labels=("server", "outcome"),
        )
        for c in self._counts:
            for outcome, n in c.by_outcome.items():
                family.add_metric([c.server, outcome], n)
        yield family
