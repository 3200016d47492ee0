"""The Asterisk adapter: an ARI client per Asterisk, the calls in Stasis, the prompt audio.

Rules of this file (docs/asterisk.md):
- `[adapters.asterisk]` names one Asterisk (url, username, password, app,
  default_instance), or several as `[[adapters.asterisk.servers]]`, each
  taking the outer table's keys as defaults. Each server gets its own ARI
  client and calls; the TTS cache and `/media/` are shared. Each keeps its
  events websocket up (ari.py) and is reported in /readyz (not ready while
  down); other front doors serve on.
- Every call is a `Call` (call.py) with its own task. Events are routed to
  it by channel id; a StasisStart creates it. Live calls are also
  registered for other front doors (an utterance over the JSON webhook).
- Prompts are audio the gateway makes (gateway.tts): served at `/media/`
  and played as `sound:<media_url><name>`, or, in directory mode, as
  `sound:<media_dir>/<hash>` from a directory Asterisk shares.
- After a reconnect, calls are reconciled: a channel Asterisk no longer has
  ends its call; a prompt that finished while we were away is treated as
  finished.
- With `record_calls`, each call is recorded through a snoop channel
  (recording.py); its events are routed to the call's recording by the snoop
  channel's id, and a snoop channel never becomes a call. Finished files go
  to `recordings_dir` (shared by every server), served as signed links of
  kind `recordings-asterisk` and reported to the recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adapters.asterisk import codec
from adapters.asterisk.ari import AriClient, AriCollector, AriStatus
from adapters.asterisk.call import ERROR_MEDIA, Call
from adapters.asterisk.recording import (
    FORMATS,
    LINK_KIND,
    CallRecording,
    Counts,
    RecordingCollector,
    RecordingConfig,
)
from gateway import errors
from gateway.calls.events import CallEvent
from gateway.calls.mount import AdapterContext, Mounted
from gateway.dialogue.config import ConfigProblem, Reader, TTSConfig
from gateway.dialogue.operations import Reply
from gateway.store.instances import Instance
from gateway.tts import TtsError, TtsService
from gateway.tts.espeak import EspeakSynthesizer
from gateway.tts.media import MediaRoute
from gateway.tts.service import TtsCollector

log = logging.getLogger("adapters.asterisk")

FRONT = "asterisk"
MEDIA_PREFIX = "/media/"
DEFAULT_TTS = TTSConfig()
_DESTINATION_FORMS = 'must be "context,extension,priority" or "redirect:<endpoint>"'
Rendered = tuple[Reply | None, Instance | None]


# Keys only the outer table may set: one TTS cache and one recordings
# directory (one link kind) serve every server.
SHARED_ONLY = (
    "tts_cache_dir",
    "tts_cache_max_mb",
    "sample_rate",
    "enabled",
    "servers",
    "recordings_dir",
    "max_recording_bytes",
)
FINISH_GRACE = 5.0  # at shutdown, for recordings being fetched


@dataclass(frozen=True, slots=True)
class AsteriskConfig:
    name: str
    url: str
    username: str
    password: str
    app: str
    default_instance: str
    media_mode: Literal["http", "directory"]
    media_url: str
    media_dir: str
    tts_cache_dir: Path
    tts_cache_max_bytes: int
    sample_rate: int
    inter_digit_ms: int
    agents: Mapping[str, codec.Destination]
    ivrs: Mapping[str, codec.Destination]
    default_agent: codec.Destination | None
    default_ivr: codec.Destination | None
    # None: calls are not recorded.
    recording: RecordingConfig | None = None

    def __repr__(self) -> str:
        return f"AsteriskConfig({self.name}: url={self.url!r}, app={self.app!r})"


def _destinations(r: Reader, name: str) -> dict[str, codec.Destination]:
    value = r.data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigProblem(r.key(name), "must be a table")
    out: dict[str, codec.Destination] = {}
    for key, text in value.items():
        where = codec.parse_destination(text) if isinstance(text, str) else None
        if where is None:
            raise ConfigProblem(
                f"{r.key(name)}.{key}",
                'must be "context,extension,priority" or "redirect:<endpoint>"',
            )
        out[key] = where
    return out


def _destination(r: Reader, name: str) -> codec.Destination | None:
    text = r.text(name, "", max_len=200)
    if not text:
        return None
    where = codec.parse_destination(text)
    if where is None:
        raise ConfigProblem(
            r.key(name), 'must be "context,extension,priority" or "redirect:<endpoint>"'
        )
    return where


def parse_config(table: Mapping[str, Any], where: str, base_dir: Path) -> list[AsteriskConfig]:
    """One config per Asterisk: the table itself, or each of its `servers`."""
    servers = table.get("servers")
    if servers is None:
        return [_server(table, where, base_dir, "asterisk")]
    if not isinstance(servers, list) or not servers:
        raise ConfigProblem(f"{where}.servers", "must be a non-empty array of tables")
    defaults = {k: v for k, v in table.items() if k != "servers"}
    out: list[AsteriskConfig] = []
    for i, server in enumerate(servers):
        key = f"{where}.servers[{i}]"
        if not isinstance(server, Mapping):
            raise ConfigProblem(key, "must be a table")
        for shared in SHARED_ONLY:
            if shared in server:
                raise ConfigProblem(f"{key}.{shared}", f"set it in [{where}], for every server")
        name = server.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ConfigProblem(f"{key}.name", "required: a short unique name for this Asterisk")
        config = _server({**defaults, **server}, key, base_dir, name)
        if any(c.name == config.name for c in out):
            raise ConfigProblem(f"{key}.name", f"{name!r} is used twice")
        if any((c.url, c.app) == (config.url, config.app) for c in out):
            raise ConfigProblem(key, "another server has the same url and app")
        out.append(config)
    return out


def _server(table: Mapping[str, Any], where: str, base_dir: Path, name: str) -> AsteriskConfig:
    r = Reader({k: v for k, v in table.items() if k != "name"}, where)
    url = r.text("url", "http://127.0.0.1:8088", max_len=512)
    if not url.startswith(("http://", "https://")):
        raise ConfigProblem(r.key("url"), "must be an http:// or https:// URL")
    username = r.text("username", max_len=128)
    password = r.text("password", max_len=256)
    if not username or not password:
        raise ConfigProblem(where, "username and password (an ari.conf user) are required")
    mode = r.text("media_mode", "http", max_len=16)
    if mode not in ("http", "directory"):
        raise ConfigProblem(r.key("media_mode"), "must be http or directory")
    cache = Path(r.text("tts_cache_dir", "var/tts", max_len=4096))
    # Asterisk plays a `.wav` only at 8 kHz (16 kHz needs `.wav16` names).
    rate = r.integer("sample_rate", 8000, 8000, 8000)
    t = r.table("transfer", required=False)
    media_url = r.text("media_url", "http://127.0.0.1:8080/media/", max_len=512)
    recordings = Path(r.text("recordings_dir", "var/recordings", max_len=4096))
    record_format = r.text("record_format", "wav", max_len=16)
    if record_format not in FORMATS:
        raise ConfigProblem(r.key("record_format"), f"must be one of {', '.join(FORMATS)}")
    max_recording = r.integer("max_recording_bytes", 1_024, 1 << 31, 100 * 1_048_576)
    recording = (
        RecordingConfig(
            recordings if recordings.is_absolute() else base_dir / recordings,
            record_format,
            max_recording,
        )
        if r.boolean("record_calls", False)
        else None
    )
    return AsteriskConfig(
        name=name,
        url=url,
        username=username,
        password=password,
        app=r.text("app", "ivrgw", max_len=64),
        default_instance=r.text("default_instance", "", max_len=128),
        media_mode="http" if mode == "http" else "directory",
        media_url=media_url if media_url.endswith("/") else media_url + "/",
        media_dir=r.text("media_dir", "", max_len=4096),
        tts_cache_dir=cache if cache.is_absolute() else base_dir / cache,
        tts_cache_max_bytes=r.integer("tts_cache_max_mb", 1, 1_000_000, 1024) << 20,
        sample_rate=rate,
        inter_digit_ms=r.integer("inter_digit_ms", 100, 30_000, 2_000),
        agents=_destinations(t, "agents"),
        ivrs=_destinations(t, "ivrs"),
        default_agent=_destination(t, "default_agent"),
        default_ivr=_destination(t, "default_ivr"),
        recording=recording,
    )


class AsteriskAdapter:
    """One Asterisk: its ARI client and its calls."""

    def __init__(
        self, context: AdapterContext, config: AsteriskConfig, tts: TtsService, prefix: str = ""
    ) -> None:
        self.config = config
        # Conversation ids are `<prefix><channel id>` ("east:1795317851.2" with servers).
        self.prefix = prefix
        self.bridge = context.bridge
        self.live = context.live
        self.tts = tts
        self.ari = AriClient(
            config.url,
            config.username,
            config.password,
            config.app,
            context.http,
            self._on_event,
            self._on_connect,
            config.name,
        )
        self.calls: dict[str, Call] = {}
        self.recorder = context.recorder
        self.links = context.links
        self.counts = Counts(config.name)
        # Live recordings by their snoop channel's id, and the ones being fetched.
        self.recordings: dict[str, CallRecording] = {}
        self._finishing: set[asyncio.Task[None]] = set()

    # -- events -----------------------------------------------------------------

    def _on_event(self, event: codec.Event) -> None:
        recording = self.recordings.get(event.channel_id)
        if recording is not None:
            recording.on_event(event)
            return
        call = self.calls.get(event.channel_id)
        if call is None:
            if not isinstance(event, codec.StasisStart) or event.name.startswith("Snoop/"):
                return  # a channel we do not (or no longer) handle, or a tap
            call = self.calls[event.channel_id] = Call(self, event.channel_id)
            self.live[call.conversation] = call.inject
            call.start()
        call.feed(event)

    async def _on_connect(self) -> None:
        """Reconcile live calls with Asterisk after a (re)connect."""
        for call in list(self.calls.values()):
            try:
                await self.ari.rest("GET", f"/channels/{call.id}")
            except AriStatus as exc:
                if exc.call_gone:
                    call.feed(codec.CallGone(call.id, "missing after reconnect"))
                continue
            except errors.BackendError:
                continue
            playback = call.playback
            if playback is not None:
                with contextlib.suppress(errors.BackendError):
                    try:
                        await self.ari.rest("GET", f"/playbacks/{playback}")
                    except AriStatus as exc:
                        if exc.status == 404:
                            call.feed(codec.PlaybackFinished(call.id, playback, "done"))

    def forget(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self.live.pop(call.conversation, None)

    # -- what calls ask of the adapter -----------------------------------------

    async def turn(self, call: Call, event: CallEvent) -> tuple[Reply | None, Instance | None]:
        def render(
            reply: Reply | None, instance: Instance | None
        ) -> tuple[Reply | None, Instance | None]:
            return reply, instance

        return await self.bridge.run(FRONT, event, call.instance_id, render)

    async def media_for(self, reply: Reply, instance: Instance | None) -> list[str]:
        """The ARI media URIs that say `reply` (empty: nothing to say)."""
        media: list[str] = []
        text = reply.text.strip()
        if codec.passthrough(text):
            media.append(text)
        elif text:
            tts = instance.navigation.tts if instance is not None else DEFAULT_TTS
            try:
                prompt = await self.tts.prompt(text, tts)
            except TtsError as exc:
                log.error("prompt synthesis failed", extra={"fields": {"error": str(exc)}})
                media.append(ERROR_MEDIA)
            else:
                if self.config.media_mode == "http":
                    media.append(f"sound:{self.config.media_url}{prompt.name}")
                else:
                    stem = prompt.name.removesuffix(".wav")
                    media.append(f"sound:{self.config.media_dir.rstrip('/')}/{stem}")
        media.extend(codec.media_params(reply))
        return media

    # -- recordings -------------------------------------------------------------

    async def start_recording(self, call: Call) -> CallRecording | None:
        """Tap the call (before its first prompt) and start recording beside it."""
        config = self.config.recording
        if config is None:
            return None
        recording = CallRecording(
            self.ari, config, self.counts, call.id, call.conversation, call.instance_id
        )
        # Registered first: the snoop's StasisStart may beat the REST answer.
        self.recordings[recording.snoop_id] = recording
        if not await recording.attach():
            self.recordings.pop(recording.snoop_id, None)
            return None
        return recording

    def finish_recording(self, call: Call, recording: CallRecording) -> None:
        """Fetch the call's recording off the call's task, then report it."""
        task = asyncio.create_task(self._finish(call, recording), name=f"ari-fetch-{call.id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, call: Call, recording: CallRecording) -> None:
        try:
            saved = await recording.finish()
        finally:
            self.recordings.pop(recording.snoop_id, None)
        if saved is None or self.recorder is None:
            return
        name = "/".join(recording.relative.parts)
        try:
            self.links.path_of(LINK_KIND, name)
        except ValueError:
            log.warning("recording not linkable", extra={"fields": {"name": name}})
            return
        self.recorder.recording(call.instance_id, call.conversation, saved.name, LINK_KIND, name)

    def destination(self, reply: Reply) -> codec.Destination | None:
        c = self.config
        return codec.destination(reply, c.agents, c.ivrs, c.default_agent, c.default_ivr)

    # -- lifecycle --------------------------------------------------------------

    async def startup(self) -> None:
        self.ari.start()

    async def shutdown(self) -> None:
        if self._finishing:
            # Recordings being fetched get a moment; the rest stay in Asterisk's spool.
            await asyncio.wait(list(self._finishing), timeout=FINISH_GRACE)
            for task in self._finishing:
                task.cancel()
        await self.ari.close()
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def ready(self) -> bool:
        return self.ari.connected

    def __repr__(self) -> str:
        return f"AsteriskAdapter({self.config!r}, calls={len(self.calls)})"


def mount(context: AdapterContext, table: Mapping[str, Any], where: str) -> Mounted:
    configs = parse_config(table, where, context.base_dir)
    first = configs[0]
    tts = TtsService(
        first.tts_cache_dir, EspeakSynthesizer(), first.sample_rate, first.tts_cache_max_bytes
    )
    single = "servers" not in table
    adapters = [AsteriskAdapter(context, c, tts, "" if single else f"{c.name}:") for c in configs]
    context.metrics.bind_front(FRONT)
    context.metrics.registry.register(AriCollector(lambda: (a.ari for a in adapters)))
    recording = next((c.recording for c in configs if c.recording is not None), None)
    if recording is not None:
        context.metrics.registry.register(RecordingCollector([a.counts for a in adapters]))
        if context.recorder is not None:
            context.links.add_root(LINK_KIND, recording.directory)
    context.metrics.registry.register(TtsCollector(tts))
    http_media = any(c.media_mode == "http" for c in configs)
    prefixes = {MEDIA_PREFIX: MediaRoute(tts)} if http_media else {}

    async def shutdown_tts() -> None:
        await tts.aclose()

    return Mounted(
        {},
        prefixes,
        startup=[a.startup for a in adapters],
        shutdown=[*(a.shutdown for a in adapters), shutdown_tts],
        ready={("asterisk" if single else f"asterisk:{a.config.name}"): a.ready for a in adapters},
    )
