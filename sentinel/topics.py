"""Topic patterns such as `fleet/{tenant}/{zone}/{kind}/{device_id}/telemetry`.

Each placeholder is one whole topic level. A pattern gives the MQTT subscription filter
(placeholders become `+`) and splits a received topic into its named levels.
"""

from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDERS = ("tenant", "zone", "kind", "device_id")


@dataclass(frozen=True, slots=True)
class TopicPattern:
    template: str
    levels: tuple[str, ...]
    slots: tuple[tuple[int, str], ...]  # (level index, placeholder name)
    names: tuple[str | None, ...] = ()  # per level: its placeholder, or None for fixed text

    @classmethod
    def parse(cls, template: str) -> TopicPattern:
        levels = tuple(template.split("/"))
        slots: list[tuple[int, str]] = []
        for i, level in enumerate(levels):
            if level.startswith("{") and level.endswith("}"):
                name = level[1:-1]
                if name not in PLACEHOLDERS:
                    raise ValueError(f"unknown placeholder {{{name}}} in topic {template!r}")
                slots.append((i, name))
            elif any(c in level for c in "{}+#"):
                raise ValueError(f"level {level!r} of topic {template!r} mixes text and wildcards")
        found = [name for _, name in slots]
        if len(set(found)) != len(found):
            raise ValueError(f"a placeholder appears twice in topic {template!r}")
        names = dict(slots)
        return cls(template, levels, tuple(slots), tuple(names.get(i) for i in range(len(levels))))

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(name for _, name in self.slots)

    @property
    def subscription(self) -> str:
        filled = list(self.levels)
        for i, _ in self.slots:
            filled[i] = "+"
        return "/".join(filled)

    def match(self, topic: str) -> dict[str, str] | None:
        """Named levels of `topic`, or None when it does not fit the pattern."""
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        out: dict[str, str] = {}
        for part, level, name in zip(parts, self.levels, self.names, strict=True):
            if name is not None:
                out[name] = part
            elif part != level:
                return None
        return out
