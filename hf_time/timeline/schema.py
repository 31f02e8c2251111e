"""Reading nested YAML mappings into dataclass fields, collecting every problem with its key path.

:class:`Reader` keeps a list of problems (``tasks[2].text_column: expected str``) instead of raising at
the first one, so a config loader can report everything that needs fixing in one error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class Reader:
    """Collects problems while reading nested mappings, each prefixed with its key path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def section(self, data: Any, path: str, cls: type, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The keys of ``data`` that are fields of ``cls``; unknown keys are reported."""
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problems.append(f"{path}: expected a mapping, got {type(data).__name__}")
            return {}
        known = {f.name for f in dataclasses.fields(cls)} - exclude
        for key in data:
            if key not in known:
                self.problems.append(f"{self._key(path, key)}: unknown key (valid: {', '.join(sorted(known))})")
        return {k: v for k, v in data.items() if k in known}

    @staticmethod
    def _key(path: str, key: Any) -> str:
        return f"{path}.{key}" if path else str(key)

    def typed(self, values: dict[str, Any], path: str, key: str, kinds: tuple[type, ...], *, optional: bool = False) -> None:
        """Check ``values[key]`` is one of ``kinds`` (ints accepted as floats); drop it if not."""
        if key not in values or (optional and values[key] is None):
            return
        value = values[key]
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
            return
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = "/".join(k.__name__ for k in kinds) + (" or null" if optional else "")
            self.problems.append(f"{self._key(path, key)}: expected {names}, got {value!r}")
            del values[key]

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)


def read_simple(r: Reader, data: Any, path: str, cls: type, checks: Mapping[str, tuple[tuple[type, ...], Any, str]]):
    """Read a flat section: ``checks`` maps a key to (accepted types, rule or None, what the rule wants)."""
    values = r.section(data, path, cls)
    for key, (kinds, rule, want) in checks.items():
        optional = type(None) in kinds
        r.typed(values, path, key, tuple(k for k in kinds if k is not type(None)), optional=optional)
        if values.get(key) is not None and rule is not None and not rule(values[key]):
            r.problems.append(f"{path}.{key}: must be {want}, got {values[key]!r}")
            values.pop(key)
    return values
