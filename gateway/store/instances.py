"""Instances: an instance's identity, limits, navigation config and bot.

An `Instance` is immutable; changing one means building a new value and
swapping it in the registry, so live conversations keep the one they began
with. `parse_instance` validates one instance file's table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.bots.rules import build_rules_bot
from gateway.dialogue.bot import AsyncBot, SyncBot
from gateway.dialogue.config import ConfigProblem, NavigationConfig, Reader, parse_navigation

MAX_CONCURRENCY = 100_000
Status = Literal["Published", "Disabled"]


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    name: str
    description: str
    concurrency: int
    status: Status
    navigation: NavigationConfig
    # The embedded rules bot from the instance file, always built.
    rules: SyncBot
    # The bot that answers: `chatbot` names a configured bot ([[bots]] in
    # gateway.toml), "" the embedded rules. The gateway binds the name to
    # `async_bot` at start-up and on AssociateChatbotInstance.
    chatbot: str = ""
    async_bot: AsyncBot | None = None
    # Remote mode: every operation goes to the named [[remotes]] endpoint,
    # as `remote_instance_id` there.
    remote: str = ""
    remote_instance_id: str = ""
    # The table the instance was built from (an instance file's, or the
    # stored document, gateway.store.catalog): a change is an edit of this
    # document parsed again, so one validation covers files and the API.
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        return (
            f"Instance(id={self.instance_id!r}, name={self.name!r}, "
            f"concurrency={self.concurrency}, chatbot={self.chatbot!r}, remote={self.remote!r})"
        )


def parse_instance(data: Mapping[str, Any]) -> Instance:
    r = Reader(data, "")
    instance_id = r.text("InstanceId", max_len=128)
    if not instance_id.strip():
        raise ConfigProblem("InstanceId", "must not be empty")
    bot_table = r.table("bot", required=False)
    kind = bot_table.text("kind", "rules", max_len=32)
    if kind != "rules":
        raise ConfigProblem("bot.kind", f"unknown bot kind {kind!r} (expected rules)")
    enabled = r.boolean("Enabled", True)
    remote = r.table("remote", required=False)
    remote_name = remote.text("name", "", max_len=64)
    return Instance(
        instance_id=instance_id,
        name=r.text("Name", instance_id, max_len=128),
        description=r.text("Description", "", max_len=1000),
        concurrency=r.integer("Concurrency", 1, MAX_CONCURRENCY, 100),
        status="Published" if enabled else "Disabled",
        navigation=parse_navigation(data),
        rules=build_rules_bot(bot_table.data),
        chatbot=r.text("Chatbot", "", max_len=64),
        remote=remote_name,
        remote_instance_id=remote.text("instance", instance_id, max_len=128),
        document=data,
    )


class InstanceRegistry:
    """The instances the gateway serves, by InstanceId."""

    def __init__(self, instances: Iterable[Instance] = ()) -> None:
        self._by_id: dict[str, Instance] = {i.instance_id: i for i in instances}

    def get(self, instance_id: str) -> Instance | None:
        return self._by_id.get(instance_id)

    def put(self, instance: Instance) -> None:
        self._by_id[instance.instance_id] = instance

    def remove(self, instance_id: str) -> Instance | None:
        """Forget an instance; conversations already begun keep their own reference."""
        return self._by_id.pop(instance_id, None)

    def __iter__(self) -> Any:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"InstanceRegistry({sorted(self._by_id)})"
