"""Prompt templates: `${name}` is filled from the conversation variables.

A template is compiled once at start-up into literal and variable parts; a
prompt without `${` stays a plain string and costs nothing to render. A
variable the conversation does not have renders as the empty string, so the
caller never hears the placeholder read out. `$${` is a literal `${`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_.-]{0,63})\}")


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    # Even positions are literals, odd positions are variable names.
    parts: tuple[str, ...]
    # The same as a str.format pattern with positional fields, and the names
    # in field order: rendering is one C-level format call.
    pattern: str = ""
    names: tuple[str, ...] = ()
    blanks: tuple[str, ...] = ()  # one "" per name: the default for a missing one

    @property
    def is_plain(self) -> bool:
        return not self.names

    def render(self, variables: Mapping[str, str]) -> str:
        if not self.names:
            return self.source
        # map() over the C method `get` renders without a Python frame per name.
        return self.pattern.format(*map(variables.get, self.names, self.blanks))

    def __str__(self) -> str:
        return self.source


def compile_template(source: str) -> Template:
    if "${" not in source:
        return Template(source, (source,))
    parts: list[str] = []
    literal: list[str] = []
    pos = 0
    for m in _VAR.finditer(source):
        literal.append(source[pos : m.start()])
        if m.group(1) is None:  # "$${": an escaped literal "${"
            literal.append("${")
        else:
            parts.append("".join(literal))
            parts.append(m.group(1))
            literal = []
        pos = m.end()
    literal.append(source[pos:])
    parts.append("".join(literal))
    names = tuple(parts[1::2])
    if not names:
        # Only escaped "$${" sequences: a plain string after unescaping.
        return Template(parts[0], (parts[0],))
    pattern = "".join(
        f"{{{i // 2}}}" if i % 2 else part.replace("{", "{{").replace("}", "}}")
        for i, part in enumerate(parts)
    )
    return Template(source, tuple(parts), pattern, names, ("",) * len(names))


def variable_names(template: Template) -> tuple[str, ...]:
    return template.parts[1::2]
