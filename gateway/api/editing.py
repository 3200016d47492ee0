"""Changing instances at run time: the database first, then memory, one change at a time.

Rules of this file:
- Every change is an edit of an instance's document (the table an instance
  file holds, gateway.store.catalog). The new document is parsed with
  `parse_instance`, the validation instance files get; a problem is
  InvalidParameter naming the parameter (the last part of the problem's
  key, which is the parameter's name in every action that sets it).
- Then the store's writer thread writes it in one statement, and only
  after the commit is the new `Instance` put in the registry. A refused or
  failed write changes nothing anywhere.
- Changes to one instance are serialised by an asyncio.Lock per InstanceId,
  so the read-edit-write of concurrent calls never interleaves: what is
  stored and served is always one call's whole version. A change runs
  shielded from the caller's cancellation, so a client that goes away
  cannot leave the database and memory apart.
- Swapping the registry's value is all a conversation sees: a live one
  keeps the Instance it began with (gateway.services.local), so a change
  applies to conversations that begin after it.
- One Editor per registry (`editor_of`), shared by every module's actions,
  so their changes to one instance queue on the same lock.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import sqlite3
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from gateway import errors
from gateway.api.manage import Context
from gateway.dialogue.config import ConfigProblem
from gateway.store.catalog import DeleteInstance, InsertInstance, ReplaceInstance
from gateway.store.instances import Instance, InstanceRegistry, parse_instance

Document = dict[str, Any]


def problem_to_error(
    exc: ConfigProblem, names: Mapping[str, str] | None = None
) -> errors.InvalidParameter:
    """A document problem as the API's error, naming the parameter: the key's
    last part, or what `names` maps the whole key to."""
    key = exc.key
    name = names.get(key) if names else None
    return errors.InvalidParameter.named(name or key.rpartition(".")[2], exc.problem)


class Editor:
    """Creates, edits and deletes the instances of one registry, persisted in the store."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.instances = context.instances
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, instance_id: str) -> asyncio.Lock:
        lock = self._locks.get(instance_id)
        if lock is None:
            lock = self._locks[instance_id] = asyncio.Lock()
        return lock

    def build(
        self, document: Mapping[str, Any], names: Mapping[str, str] | None = None
    ) -> Instance:
        """The Instance a document describes, its bot bound; InvalidParameter if invalid."""
        try:
            instance = parse_instance(document)
        except ConfigProblem as exc:
            raise problem_to_error(exc, names) from None
        if not instance.chatbot:
            return instance
        bot = self.context.bots.get(instance.chatbot)
        if bot is None:
            raise errors.InvalidParameter.named("Chatbot", f"no bot named {instance.chatbot!r}")
        return dataclasses.replace(instance, async_bot=bot)

    def _check_name(self, instance: Instance) -> None:
        # The database's UNIQUE constraint is the last word (two creates can
        # race past this check); checking here first gives the common case
        # its error without a write.
        for other in self.instances:
            if other.name == instance.name and other.instance_id != instance.instance_id:
                raise errors.InstanceNameDuplicated()

    async def create(self, document: Mapping[str, Any], user: str) -> Instance:
        store = self.context.need_store()
        instance = self.build(document)
        self._check_name(instance)

        async def write() -> Instance:
            async with self._lock(instance.instance_id):
                op = InsertInstance(document, instance.status, store.now_ms(), user)
                await _write(store.writer.call(op))
                self.instances.put(instance)
                return instance

        return await asyncio.shield(write())

    async def edit(
        self,
        instance_id: str,
        change: Callable[[Document], None],
        user: str,
        names: Mapping[str, str] | None = None,
    ) -> Instance:
        """Apply `change` to a copy of the instance's document and make it current.

        `names` maps a document key ("ComplainingConfig.Action") to the
        parameter that sets it, where the two differ.
        """
        store = self.context.need_store()

        async def write() -> Instance:
            async with self._lock(instance_id):
                current = self.instances.get(instance_id)
                if current is None:
                    raise errors.InstanceNotFound()
                document: Document = copy.deepcopy(dict(current.document))
                change(document)
                instance = self.build(document, names)
                self._check_name(instance)
                op = ReplaceInstance(document, instance.status, store.now_ms(), user)
                if not await _write(store.writer.call(op)):
                    raise errors.InstanceNotFound()
                self.instances.put(instance)
                return instance

        return await asyncio.shield(write())

    async def delete(self, instance_id: str) -> None:
        """Remove the instance from the database, then from the registry.

        Conversations already begun keep their Instance and finish normally.
        """
        store = self.context.need_store()

        async def write() -> None:
            async with self._lock(instance_id):
                if self.instances.get(instance_id) is None:
                    raise errors.InstanceNotFound()
                await store.writer.call(DeleteInstance(instance_id))
                self.instances.remove(instance_id)
            self._locks.pop(instance_id, None)

        await asyncio.shield(write())

    def __repr__(self) -> str:
        return f"Editor({self.instances!r}, locks={len(self._locks)})"


async def _write(call: Any) -> Any:
    """The writer's result; a broken UNIQUE(Name) is the API's duplicate-name error."""
    try:
        return await call
    except sqlite3.IntegrityError as exc:
        if "Name" in str(exc):
            raise errors.InstanceNameDuplicated() from None
        raise


_EDITORS: weakref.WeakKeyDictionary[InstanceRegistry, Editor] = weakref.WeakKeyDictionary()


def editor_of(context: Context) -> Editor:
    """The one Editor of the context's registry, made on first use."""
    editor = _EDITORS.get(context.instances)
    if editor is None:
        editor = _EDITORS[context.instances] = Editor(context)
    return editor
