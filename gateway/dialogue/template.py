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

    @property
    def is_plain(self) -> bool:
        return len(self.parts) == 1

    def render(self, variables: Mapping[str, str]) -> str:
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        out = []
        for i, part in enumerate(parts):
            out.append(variables.get(part, "") if i % 2 else part)
        return "".join(out)

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
    return Template(source, tuple(parts))


def variable_names(template: Template) -> tuple[str, ...]:
    return template.parts[1::2]
