"""The FreeSWITCH mod_httapi route: HTTP in, one bridge call, an httapi document out.

Rules of this file (docs/freeswitch.md):
- GET (the httapi default) or POST, url-encoded or multipart. Fields come
  from the query string and the body; the codec (adapters.freeswitch.codec)
  turns them into a call event and a reply into a document.
- Auth: HTTP Basic matching `username`/`password` (the profile's
  gateway-credentials), or the `ivrgw_secret` param matching `secret`.
  Anything else is 401, before anything else is read or run.
- Every answer to FreeSWITCH is 200 `text/xml` (the switch drops anything
  else), the exiting request's is 200 `text/plain` `OK`. Only a request that
  cannot be a FreeSWITCH request (no session_id, a broken upload, a body
  over the cap) gets a 4xx, in plain text.
- Turns are keyed by (session_id, ivrgw_turn): FreeSWITCH repeating a
  request gets the same document and no second turn runs.
- With `record_calls`, the first document starts a `<recordCall>`; the
  upload (multipart, with exiting=true) is stored under
  `recordings_dir/<instance>/<session_id>/`, with a JSON sidecar naming the
  conversation. With the store on, the directory is served as signed links
  of kind `recordings-freeswitch`, and the stored file is reported to the
  recorder (DescribeRecording's FileName and FilePath).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from adapters.freeswitch import codec
from adapters.freeswitch.multipart import MultipartError, parse_multipart
from gateway.api import query
from gateway.asgi import Receive, Scope, Send, respond
from gateway.calls.bridge import NO_SERVICE as _NO_SERVICE
from gateway.calls.events import CallEnded, CallStarted
from gateway.calls.mount import AdapterContext, Mounted
from gateway.dialogue.config import ConfigProblem, Reader, TTSConfig
from gateway.dialogue.operations import Reply
from gateway.errors import InvalidParameter
from gateway.store.instances import Instance

log = logging.getLogger("adapters.freeswitch")

FRONT = "freeswitch"
LINK_KIND = "recordings-freeswitch"
XML = codec.CONTENT_TYPE.encode()
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class FreeSwitchConfig:
    path: str
    default_instance: str
    tts_engine: str
    tts_voice: str
    asr_engine: str
    asr_grammar: str
    username: str
    password: str
    secret: str
    recordings_dir: Path
    max_body: int
    max_recording: int
    # > 0: the first document of each call starts a background recording.
    record_call_seconds: int
    transfers: codec.Transfers

    def __repr__(self) -> str:
        return f"FreeSwitchConfig(path={self.path!r}, default_instance={self.default_instance!r})"


def parse_config(table: Mapping[str, Any], where: str, base_dir: Path) -> FreeSwitchConfig:
    r = Reader(table, where)
    path = r.text("path", "/freeswitch/httapi", max_len=256)
    if not path.startswith("/"):
        raise ConfigProblem(r.key("path"), "must start with /")
    username = r.text("username", "", max_len=128)
    password = r.text("password", "", max_len=256)
    secret = r.text("secret", "", max_len=256)
    if bool(username) != bool(password):
        raise ConfigProblem(r.key("password"), "username and password go together")
    if not username and not secret:
        raise ConfigProblem(
            where, "set username and password (HTTP Basic) or secret: the route is never open"
        )
    recordings = Path(r.text("recordings_dir", "var/recordings", max_len=4096))
    t = r.table("transfer", required=False)
    mode = t.text("mode", "dial", max_len=16)
    if mode not in ("dial", "execute"):
        raise ConfigProblem(t.key("mode"), "must be dial or execute")
    tables: dict[str, dict[str, str]] = {}
    for name in ("agents", "ivrs"):
        value = t.data.get(name, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(v, str) and codec.valid_extension(v) for v in value.values()
        ):
            raise ConfigProblem(t.key(name), "must be a table of extensions")
        tables[name] = dict(value)
    try:
        transfers = codec.Transfers(
            agents=tables["agents"],
            ivrs=tables["ivrs"],
            default_agent=t.text("default_agent", "", max_len=64),
            default_ivr=t.text("default_ivr", "", max_len=64),
            mode="dial" if mode == "dial" else "execute",
            context=t.text("context", "default", max_len=64),
        )
    except ValueError as exc:
        raise ConfigProblem(t.key("transfer") if not t.prefix else t.prefix, str(exc)) from None
    return FreeSwitchConfig(
        path=path,
        default_instance=r.text("default_instance", "", max_len=128),
        tts_engine=r.text("tts_engine", "flite", max_len=64),
        tts_voice=r.text("tts_voice", "slt", max_len=64),
        asr_engine=r.text("asr_engine", "", max_len=64),
        asr_grammar=r.text("asr_grammar", "", max_len=256),
        username=username,
        password=password,
        secret=secret,
        recordings_dir=recordings if recordings.is_absolute() else base_dir / recordings,
        max_body=r.integer("max_body_bytes", 1_024, 1_048_576, 65_536),
        max_recording=r.integer("max_recording_bytes", 1_024, 1 << 31, 100 * 1_048_576),
        record_call_seconds=(
            r.integer("record_call_seconds", 1, 86_400, 3_600)
            if r.boolean("record_calls", False)
            else 0
        ),
        transfers=transfers,
    )


class HttapiRoute:
    def __init__(self, context: AdapterContext, config: FreeSwitchConfig) -> None:
        self.bridge = context.bridge
        self.config = config
        self.metrics = context.metrics
        self.recorder = context.recorder
        self.links = context.links
        self._basic = (
            "Basic " + base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
            if config.username
            else ""
        )
        context.metrics.bind_front(FRONT)
        self._by_tts: dict[TTSConfig | None, codec.RenderOptions] = {}

    # -- auth -------------------------------------------------------------------

    def _authorized(self, scope: Scope, fields: Mapping[str, str] | None) -> bool:
        if self._basic:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value.decode("latin-1")
                    if hmac.compare_digest(given.encode(), self._basic.encode()):
                        return True
        if self.config.secret and fields is not None:
            given = fields.get("ivrgw_secret", "")
            return hmac.compare_digest(given.encode(), self.config.secret.encode())
        return False

    # -- the route --------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "POST"):
            await respond(send, 405, b"text/plain", b"GET or POST\n")
            return
        # Basic auth is checked before the body is read; a secret param needs the fields.
        basic_ok = self._basic != "" and self._authorized(scope, None)
        if not basic_ok and not self.config.secret:
            await self._unauthorized(send)
            return
        try:
            fields, upload = await self._fields(scope, receive)
        except (InvalidParameter, MultipartError) as exc:
            await respond(send, 400, b"text/plain", f"{exc}\n".encode())
            return
        if not basic_ok and not self._authorized(scope, fields):
            await self._unauthorized(send)
            return
        try:
            parsed = codec.parse_request(fields, self.config.default_instance)
        except codec.CodecError as exc:
            if exc.code == "MissingSessionId":
                await respond(send, 400, b"text/plain", f"{exc.code}: {exc.message}\n".encode())
                return
            # A real call we cannot place: apologise and hang up, never silence.
            log.warning("httapi request refused", extra={"fields": {"code": exc.code}})
            await respond(send, 200, XML, self._render(None, None, 0, ""))
            return
        event = parsed.event
        if isinstance(event, CallEnded):
            if upload:
                self._store(parsed.instance_id, event.call_id, upload)
            key = (event.call_id, "exiting")
            await self.bridge.run(FRONT, event, parsed.instance_id, _ok, key, None)
            await respond(send, 200, b"text/plain", b"OK")
            return
        turn = parsed.turn or 0
        fingerprint = (fields.get("input_type"), fields.get(codec.INPUT_NAME))
        document = await self.bridge.run(
            FRONT,
            event,
            parsed.instance_id,
            lambda reply, instance: self._render(
                reply, instance, turn + 1, parsed.instance_id, first=isinstance(event, CallStarted)
            ),
            (event.call_id, turn),
            fingerprint,
        )
        await respond(send, 200, XML, document)

    def _render(
        self,
        reply: Reply | None,
        instance: Instance | None,
        turn: int,
        instance_id: str,
        first: bool = False,
    ) -> bytes:
        params = {"ivrgw_turn": str(turn)}
        if instance_id:
            params["instance"] = instance_id
        options = self._options(None if instance is None else instance.navigation.tts)
        if first and self.config.record_call_seconds:
            options = dataclasses.replace(
                options, record_call_seconds=self.config.record_call_seconds
            )
        return codec.render(reply if reply is not None else _NO_SERVICE, options, params)

    def _options(self, tts: TTSConfig | None) -> codec.RenderOptions:
        """Render options per TTS config (the instance's engine, or the adapter's), kept."""
        options = self._by_tts.get(tts)
        if options is None:
            cfg = self.config
            engine, voice = (
                (tts.engine, tts.voice)
                if tts is not None and tts.engine
                else (cfg.tts_engine, cfg.tts_voice)
            )
            options = self._by_tts[tts] = codec.RenderOptions(
                engine=engine,
                voice=voice,
                params={},
                transfers=cfg.transfers,
                asr_engine=cfg.asr_engine,
                asr_grammar=cfg.asr_grammar,
            )
        return options

    async def _unauthorized(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"www-authenticate", b'Basic realm="ivr-gateway"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"unauthorized\n"})

    async def _fields(
        self, scope: Scope, receive: Receive
    ) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
        """The request's fields (query, then body) and any uploaded files."""
        fields = query.parse(scope["query_string"], "query string")
        if scope["method"] != "POST":
            return fields, []
        content_type = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
        multipart = content_type.startswith("multipart/form-data")
        cap = self.config.max_recording if multipart else self.config.max_body
        body = await _read(receive, cap)
        if multipart:
            form, files = parse_multipart(content_type, body)
            fields.update(form)
            return fields, files
        if body:
            fields.update(query.parse(body, "form body"))
        return fields, []

    def _store(self, instance_id: str, call_id: str, files: list[tuple[str, str, bytes]]) -> None:
        where = self.config.recordings_dir / _SAFE.sub("_", instance_id) / _SAFE.sub("_", call_id)
        where.mkdir(parents=True, exist_ok=True)
        for name, filename, data in files:
            target = where / (_SAFE.sub("_", Path(filename).name) or f"{_SAFE.sub('_', name)}.wav")
            target.write_bytes(data)
            meta = {
                "instance_id": instance_id,
                "conversation_id": call_id,
                "field": name,
                "file": target.name,
                "bytes": len(data),
            }
            target.with_suffix(target.suffix + ".json").write_bytes(orjson.dumps(meta))
            log.info("recording stored", extra={"fields": meta})
            self._report(instance_id, call_id, target)

    def _report(self, instance_id: str, call_id: str, target: Path) -> None:
        """Tell the recorder a conversation's recording exists, as a link name."""
        if self.recorder is None:
            return
        name = "/".join(target.relative_to(self.config.recordings_dir).parts)
        try:
            self.links.path_of(LINK_KIND, name)
        except ValueError:
            # A segment the link rules refuse (one starting with "_" or "."):
            # the file is kept, but no link could ever serve it.
            log.warning("recording not linkable", extra={"fields": {"name": name}})
            return
        self.recorder.recording(instance_id, call_id, target.name, LINK_KIND, name)

    def __repr__(self) -> str:
        return f"HttapiRoute({self.config!r})"


def _ok(reply: Reply | None, instance: Instance | None) -> bytes:
    return b"OK"


async def _read(receive: Receive, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise InvalidParameter(f"The request body exceeds {cap} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def mount(context: AdapterContext, table: Mapping[str, Any], where: str) -> Mounted:
    config = parse_config(table, where, context.base_dir)
    if context.recorder is not None:
        # Uploads (recordCall, or a record tag's file) are served as signed links.
        context.links.add_root(LINK_KIND, config.recordings_dir)
    return Mounted({config.path: HttapiRoute(context, config)})
