"""Scripted calls through Asterisk ARI (front=asterisk), for bench.callgen.

The fake Asterisk (tests/fake_ari.py) runs in the generator's process, on
its core, with playback time scaled to ~1 ms; the whole slice runs on the
fake's own event loop. A call is a channel entering Stasis; digits are
ChannelDtmfReceived events; an utterance and a silence, which ARI cannot
carry (it has no recogniser), go to the live channel through the JSON
webhook, as docs/asterisk.md describes. A turn ends when the fake receives
the gateway's `POST /channels/{id}/play` of the answer; the end of a call is
the caller's hang-up, timed until the channel is destroyed.

A silence is the gateway's own: after a Broadcast prompt has played, its
silence timer runs the NoInput turn. ARI calls use `demoari`, the demo
instance with a 1 s silence timeout (the shortest; the demo's is 10 s), and
that turn is timed from when the timer was due: the end of the previous
prompt plus the timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import fronts
from bench.callgen import Leg, Pool, now
from bench.rpc_turn import HOST
from bench.scripts import BALANCE, Script
from tests.fake_ari import FakeAsterisk, FakeChannel, FakePlayback, RestCall, _Resp

APP = "ivrgw"
USER, PASSWORD = "ari", "bench-password"
TURN_TIMEOUT = 10.0
INSTANCE = "demoari"
SILENCE_S = 1


class BenchAsterisk(FakeAsterisk):
    """The fake, telling waiters when a channel's answer starts to play."""

    def __init__(self) -> None:
        super().__init__(
            username=USER, password=PASSWORD, app=APP, time_scale=0.0001, min_playback_ms=1
        )
        self.plays: dict[str, asyncio.Future[float]] = {}
        self.finished: dict[str, float] = {}  # channel -> when its last prompt ended

    async def _respond(self, call: RestCall, headers: dict[str, str], raw: bytes) -> _Resp:
        response = await super()._respond(call, headers, raw)
        if call.method == "POST" and call.path.endswith("/play"):
            # /ari/channels/{id}/play
            waiter = self.plays.pop(call.path.split("/")[3], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(call.at)
        return response

    def _emit_playback(self, ch: FakeChannel, pb: FakePlayback) -> None:
        super()._emit_playback(ch, pb)
        if pb.state in ("done", "failed"):
            self.finished[ch.id] = time.perf_counter()

    def expect_play(self, channel: str) -> asyncio.Future[float]:
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.plays[channel] = waiter
        return waiter

    def forget(self) -> None:
        """Drop what the fake keeps for tests: past requests, events, destroyed channels."""
        self.requests.clear()
        self.events_sent.clear()
        self.media_fetches.clear()
        for cid in [c for c, ch in self.channels.items() if ch.destroyed]:
            del self.channels[cid]
            self.finished.pop(cid, None)


class _AriLeg:
    def __init__(self, t: AriTransport, script: Script) -> None:
        self.t, self.script = t, script
        self.channel: FakeChannel | None = None
        self.conn: Any = None
        self.due: float | None = None

    async def _play(
        self, waiter: asyncio.Future[float], error: str | None
    ) -> tuple[float, str | None]:
        try:
            return await asyncio.wait_for(waiter, TURN_TIMEOUT), error
        except TimeoutError:
            return now(), "no-play"

    async def _inject(self, i: int) -> tuple[float, str | None]:
        assert self.channel is not None
        fake, pool = self.t.fake, self.t.pool
        waiter = fake.expect_play(self.channel.id)
        event = fronts.webhook_event(i, self.script.steps[i], INSTANCE)
        if self.conn is None or not self.conn.alive:
            self.conn = await pool.acquire()
        _, error = await self.conn.request(
            fronts.webhook_request(pool.port, self.channel.id, event)
        )
        return await self._play(waiter, error)

    async def _silence(self) -> tuple[float, str | None]:
        assert self.channel is not None
        fake, cid = self.t.fake, self.channel.id
        waiter = fake.expect_play(cid)
        played = await self._play(waiter, None)
        # The timer started when the previous prompt ended (before this play).
        self.due = fake.finished.get(cid, played[0]) + SILENCE_S
        return played

    async def turn(self, i: int) -> tuple[float, str | None]:
        fake, kind = self.t.fake, self.script.steps[i].kind
        self.due = None
        if kind == "silence":
            return await self._silence()
        if kind == "begin":
            self.channel = await fake._originate(self.t.originate)
            return await self._play(fake.expect_play(self.channel.id), None)
        assert self.channel is not None
        if kind == "digits":
            waiter = fake.expect_play(self.channel.id)
            await fake._press(self.channel, self.script.steps[i].text + "#", 0)
            return await self._play(waiter, None)
        if kind == "end":
            await fake._hangup(self.channel, {"cause": 16}, 16, "caller")
            return now(), None
        return await self._inject(i)

    def release(self) -> None:
        if self.conn is not None and self.conn.alive and self.conn.waiter is None:
            self.t.pool.release(self.conn)


class AriTransport:
    """Channels on the fake; utterances and silences through the gateway's webhook."""

    def __init__(self, fake: BenchAsterisk, gateway_port: int, plays: tuple[Script, ...]) -> None:
        self.fake, self.plays = fake, plays
        self.pool = Pool(HOST, gateway_port, 1024)
        self.originate: dict[str, Any] = {
            "caller": "13800000000",
            "caller_name": "",
            "exten": "s",
            "context": "ivr",
            "args": [INSTANCE, f"balance={BALANCE}"],
            "state": "Up",
            "channel_id": None,
            "name": None,
            "priority": 2,
            "protocol_id": None,
            "language": "en",
            "variables": {},
            "app": APP,
        }

    async def start(self) -> None:
        return None

    async def open(self, call: str, script: int) -> Leg:
        return _AriLeg(self, self.plays[script])

    async def close(self) -> None:
        """Hang up calls the slice left in Stasis, so no conversation outlives it."""
        for ch in list(self.fake.channels.values()):
            if not ch.destroyed:
                await self.fake._hangup(ch, {"cause": 16}, 16, "caller")
        self.pool.close()
        self.fake.forget()
