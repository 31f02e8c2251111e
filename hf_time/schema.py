"""One way to declare a config field and to read plain data (YAML, JSON, CLI strings) into it.

Every typed config of hf_time — a merge method's parameters, the merge YAML, the timeline YAML — is
a frozen dataclass whose fields are declared with :func:`field` (default, one line of help, range,
choices, public alias). :func:`build` reads a mapping into such a class and *collects* problems
instead of raising at the first one, each prefixed with its key path (``tasks[2].text_column``,
``strategy.params.density``), so one error lists everything that needs fixing. The same
declarations drive ``hf-time ls``, the README's method table and the contract tests.

Types understood (from the annotations): ``int``, ``float``, ``bool``, ``str``, ``X | None``,
``tuple[X, ...]`` (a YAML list), ``Mapping``/``dict`` (kept as a dict), ``Any``, a nested
dataclass, and unions of those (the first alternative that fits wins). With ``strings=True``
(command-line values) ``"0.5"``, ``"true"`` and ``"none"`` are converted to the declared type.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Mapping, Sequence

from hf_time.errors import ConfigError


def field(default: Any = MISSING, help: str = "", *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, choices: Sequence[Any] | None = None,
          alias: str | None = None, per_expert: bool = False, per_tensor: bool = True,
          default_factory: Any = MISSING) -> Any:
    """Declare a config field with its help, valid range and public name.

    Args:
        default: default value (omit for a required field).
        help: one line for ``hf-time ls``, the README and error messages.
        ge, gt, le, lt: inclusive/exclusive numeric bounds.
        choices: allowed values.
        alias: the public name when it is not a valid Python identifier (``lambda``).
        per_expert: a merge parameter that may also be set per expert (mergekit's per-model ``parameters``).
        per_tensor: a merge parameter that may vary from tensor to tensor (gradients, filters); False for
            whole-model settings such as where thresholds are computed.
        default_factory: as :func:`dataclasses.field`.
    """
    meta = dict(help=help, ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices) if choices else None, alias=alias,
                per_expert=per_expert, per_tensor=per_tensor)
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


@dataclass(frozen=True)
class FieldInfo:
    """The public description of one declared field."""

    name: str
    attr: str
    annotation: Any
    type: str
    default: Any
    required: bool
    help: str
    per_expert: bool
    bounds: str
    meta: Mapping[str, Any]


@functools.lru_cache(maxsize=None)
def fields(cls: type) -> tuple[FieldInfo, ...]:
    """The fields of dataclass ``cls`` in declaration order (plain dataclass fields work too)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        m = dict(f.metadata)
        bounds = ", ".join(f"{op} {m[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                           if m.get(k) is not None)
        if m.get("choices"):
            bounds = "one of " + "/".join(map(str, m["choices"]))
        required = f.default is MISSING and f.default_factory is MISSING
        default = f.default if f.default is not MISSING else (None if required else f.default_factory())
        out.append(FieldInfo(m.get("alias") or f.name, f.name, hints[f.name], type_name(hints[f.name]), default,
                             required, m.get("help", ""), bool(m.get("per_expert")), bounds, m))
    return tuple(out)


def type_name(tp: Any) -> str:
    """A short readable name of an annotation: ``float``, ``int?`` (optional), ``list of str``..."""
    if tp in (int, float, bool, str):
        return tp.__name__
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp):
        if len(args) == 1:
            return f"{type_name(args[0])}?"
        return " or ".join(type_name(a) for a in args)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return f"list of {type_name(args[0])}" if args else "list"
    if _is_mapping(tp):
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))


def _expected(tp: Any) -> str:
    """How a message says what a field wants: "a number", "a string or null", "a list of strings"..."""
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}
    if tp in names:
        return names[tp]
    if _is_union(tp):
        args = typing.get_args(tp)
        parts = [_expected(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if typing.get_origin(tp) in (tuple, list):
        return "a list"
    if _is_mapping(tp) or dataclasses.is_dataclass(tp):
        return "a mapping"
    return type_name(tp)


def _is_mapping(tp: Any) -> bool:
    return tp in (dict, typing.Mapping, collections.abc.Mapping) or typing.get_origin(tp) in (dict, collections.abc.Mapping)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


class _Invalid(Exception):
    """A value does not fit its field (the message says what was expected)."""


def convert(value: Any, tp: Any, *, path: str, problems: list[str], strings: bool = False) -> Any:
    """``value`` as annotation ``tp``; nested dataclasses record their own problems.

    Raises:
        _Invalid: the value does not fit (the caller records the message with the key path).
    """
    if tp is Any:
        return value
    if _is_union(tp):
        alternatives = typing.get_args(tp)
        if value is None and type(None) in alternatives:
            return None
        if strings and isinstance(value, str) and value.lower() in ("none", "null", "") and type(None) in alternatives:
            return None
        for alt in (a for a in alternatives if a is not type(None)):
            try:
                return convert(value, alt, path=path, problems=problems, strings=strings)
            except _Skip:  # the value had this alternative's shape; its own problems are recorded
                raise
            except _Invalid:
                continue
        raise _Invalid(f"expected {_expected(tp)}, got {value!r}")
    if value is None:
        raise _Invalid(f"a value is required (expected {_expected(tp)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if strings and isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise _Invalid(f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and strings:
            return int(value)
        if strings and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise _Invalid(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise _Invalid(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)) or (strings and isinstance(value, str)):
            try:
                number = float(value)
            except ValueError:
                raise _Invalid(f"expected a number, got {value!r}") from None
            if not math.isfinite(number):
                raise _Invalid(f"expected a finite number, got {value!r}")
            return number
        raise _Invalid(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str) or (strings and isinstance(value, (int, float)) and not isinstance(value, bool)):
            return str(value)
        raise _Invalid(f"expected a string, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(convert(v, item, path=f"{path}[{i}]", problems=problems, strings=strings))
            except _Skip:
                continue
            except _Invalid as e:
                problems.append(f"{path}[{i}]: {e}")
        return tuple(out) if origin is tuple else out
    if _is_mapping(tp):
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is not Any:
            out = {}
            for k, v in value.items():
                try:
                    out[k] = convert(v, args[1], path=f"{path}.{k}", problems=problems, strings=strings)
                except _Skip:
                    continue
                except _Invalid as e:
                    problems.append(f"{path}.{k}: {e}")
            return out
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected a mapping, got {type(value).__name__}")
        built = build(tp, value, path=path, problems=problems, strings=strings)
        if built is None:
            raise _Skip()
        return built
    raise _Invalid(f"unsupported type {tp!r}")  # a declaration error, reported rather than crashing


class _Skip(_Invalid):
    """A nested section had problems of its own (already recorded)."""


def check_range(meta: Mapping[str, Any], value: Any) -> str | None:
    """A description of the bound ``value`` violates, or None when it is allowed."""
    if value is None:
        return None
    if meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, op, ok in (("ge", ">=", value.__ge__), ("gt", ">", value.__gt__), ("le", "<=", value.__le__),
                            ("lt", "<", value.__lt__)):
            bound = meta.get(key)
            if bound is not None and not ok(bound):
                return f"must be {op} {bound}, got {value}"
    return None


def key_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def unknown_key_message(where: str, key: Any, valid: Sequence[str]) -> str:
    """``where: unknown key`` with the closest valid key, or the list of valid keys when none is close."""
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(valid) or 'none'})"
    return f"{where}: unknown key{hint}"


def read(cls: type, data: Any, *, path: str = "", problems: list[str], strings: bool = False,
         exclude: frozenset[str] = frozenset(), label: Callable[[str], str] | None = None,
         unknown: Callable[[str], str] | None = None) -> dict[str, Any] | None:
    """Read the declared fields of ``cls`` from ``data``: converted, range-checked values by attribute name.

    Invalid values are dropped and recorded in ``problems``; so are unknown keys. Required fields are
    not checked here (see :func:`build`).

    Args:
        cls: the dataclass.
        data: a mapping (None reads as empty).
        path: the key path of ``data`` for messages ("" at the top level).
        problems: where problems are appended.
        strings: convert command-line strings to the declared types.
        exclude: public names that are not accepted here.
        label: how to name a key in messages (default: its key path).
        unknown: the message for an unknown key (default: :func:`unknown_key_message`).

    Returns:
        The values, or None when ``data`` is not a mapping (recorded as a problem).
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.append(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
        return None
    label = label or (lambda key: key_path(path, key))
    infos = {f.name: f for f in fields(cls) if f.name not in exclude}
    out: dict[str, Any] = {}
    for key, raw in data.items():
        info = infos.get(key)
        if info is None:
            problems.append(unknown(key) if unknown else unknown_key_message(label(key), key, list(infos)))
            continue
        try:
            value = convert(raw, info.annotation, path=key_path(path, key), problems=problems, strings=strings)
        except _Skip:
            continue
        except _Invalid as e:
            problems.append(f"{label(key)}: {e}")
            continue
        problem = check_range(info.meta, value)
        if problem:
            problems.append(f"{label(key)}: {problem}")
            continue
        out[info.attr] = value
    return out


def build(cls: type, data: Any, *, path: str = "", problems: list[str], strings: bool = False,
          label: Callable[[str], str] | None = None, unknown: Callable[[str], str] | None = None) -> Any | None:
    """An instance of ``cls`` from ``data``, or None when any problem was found (all recorded).

    A ``ConfigError`` raised by the class itself (cross-field checks in ``__post_init__``) is recorded
    with the key path too.
    """
    before = len(problems)
    values = read(cls, data, path=path, problems=problems, strings=strings, label=label, unknown=unknown)
    if values is None:
        return None
    given = {f.attr for f in fields(cls)} & set(values)
    missing = False
    for info in fields(cls):
        if info.required and info.attr not in given:
            missing = True
            if not (isinstance(data, Mapping) and info.name in data):  # else its bad value is reported already
                problems.append(f"{(label or (lambda k: key_path(path, k)))(info.name)}: required")
    if missing:
        return None
    try:  # even when other keys were bad: the class's own checks of the good ones belong in the same error
        built = cls(**values)
        return built if len(problems) == before else None
    except ConfigError as e:  # the class's own cross-field checks; "steps must be ..." names a field
        attrs = {f.attr: f.name for f in fields(cls)}
        for problem in e.problems:
            head, sep, rest = problem.partition(" must ")
            if sep and head in attrs:
                problems.append(f"{key_path(path, attrs[head])}: must {rest}")
            else:
                problems.append(f"{path or cls.__name__}: {problem}")
        return None


def build_or_raise(cls: type, data: Any, what: str, *, path: str = "", strings: bool = False) -> Any:
    """:func:`build`, raising one :class:`ConfigError` listing every problem.

    Raises:
        ConfigError: with ``problems`` set.
    """
    problems: list[str] = []
    value = build(cls, data, path=path, problems=problems, strings=strings)
    if problems:
        raise ConfigError.from_problems(what, problems)
    return value
