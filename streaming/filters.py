"""Which events exist at all for a run, decided at emit time."""

from __future__ import annotations

from collections.abc import Iterable

from streaming.events import AGENT_TYPES, CUSTOM_PREFIX, MANDATORY_TYPES, check_event_type

PRESETS: dict[str, frozenset[str] | None] = {
    "minimal": frozenset(),
    "chat": frozenset({"token", "step", "progress", "update", "heartbeat"}),
    "debug": None,  # None: everything, custom included
    "all": None,
}


class EventsFilter:
    """`EventsFilter("chat")`, `EventsFilter("token,custom")` or `EventsFilter(["progress"])`;
    `EventsFilter([])` is `minimal`.

    Mandatory events (started, complete, error, cancelled) always pass. Raises ValueError for a
    name that is neither a preset, an event type, `custom` nor `custom:NAME`.
    """

    __slots__ = ("_all", "_all_custom", "_types", "spec")

    def __init__(self, allowed: str | Iterable[str] | EventsFilter | None = "all") -> None:
        if isinstance(allowed, EventsFilter):
            allowed = allowed.spec
        if allowed is None:
            allowed = "all"
        if isinstance(allowed, str):
            names = allowed.split(",")
        else:
            names = list(allowed)
            if not names:
                names = ["minimal"]  # an empty allow-list: mandatory events only
        names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
        if not names:
            raise ValueError("an events filter needs at least one name")
        self._all = False
        self._all_custom = False
        types: set[str] = set()
        for name in names:
            if name in PRESETS:
                preset = PRESETS[name]
                if preset is None:
                    self._all = True
                else:
                    types |= preset
            elif name == "custom":
                self._all_custom = True
            else:
                try:
                    types.add(check_event_type(name))
                except (ValueError, TypeError):
                    raise ValueError(
                        f"unknown event filter name {name!r}: use a preset "
                        f"({', '.join(PRESETS)}), an event type ({', '.join(sorted(AGENT_TYPES))}),"
                        " 'custom' or 'custom:NAME'"
                    ) from None
        self._types = frozenset(types | MANDATORY_TYPES)
        self.spec = ",".join(names)

    def allows(self, event_type: str) -> bool:
        if self._all or event_type in self._types:
            return True
        return self._all_custom and event_type.startswith(CUSTOM_PREFIX)

    def __repr__(self) -> str:
        return f"EventsFilter({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventsFilter) and self.spec == other.spec
