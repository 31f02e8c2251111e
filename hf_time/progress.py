"""Progress bars a person can read: one labelled bar per unit of work, and a quiet that is quiet.

Two context variables carry what a bar should say, so library functions need no extra arguments:

* :func:`unit` names the unit of work a bar belongs to (``"step 2/3"``); :func:`label` prefixes it,
  giving ``"step 2/3 · training sms_spam expert · 40 steps"``. Units nest.
* :func:`subject` names the model being worked on in words (``"the model deployed after step 2"``),
  so an evaluation bar never shows a cache folder's content key.

:func:`quiet` turns off hf_time's bars and the libraries' (huggingface_hub, transformers, datasets)
alike; :func:`libraries_quiet` turns off only the libraries' bars where one of ours covers the work
(a training bar covers transformers' "Loading weights" and "Writing model shards"). Both restore the
previous state on exit. Only libraries already imported are touched: this module imports none, so
the merge path stays free of the training stack.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar

_units: ContextVar[tuple[str, ...]] = ContextVar("hf_time_progress_units", default=())
_subject: ContextVar[str | None] = ContextVar("hf_time_progress_subject", default=None)
_enabled: ContextVar[bool] = ContextVar("hf_time_progress_enabled", default=True)
SEP = " · "


def enabled() -> bool:
    """Whether hf_time's own bars show (False inside :func:`quiet`)."""
    return _enabled.get()


def label(text: str) -> str:
    """``text`` prefixed by the units of work in force: ``label("merging (linear)")`` inside
    ``unit("step 2/3")`` is ``"step 2/3 · merging (linear)"``."""
    return SEP.join((*_units.get(), text))


def current_subject(default: str) -> str:
    """The model being worked on, in words, or ``default`` when no :func:`subject` is in force."""
    return _subject.get() or default


@contextlib.contextmanager
def unit(name: str) -> Iterator[None]:
    """Bars made inside say they belong to ``name`` (e.g. ``"step 2/3"``)."""
    token = _units.set((*_units.get(), name))
    try:
        yield
    finally:
        _units.reset(token)


@contextlib.contextmanager
def subject(name: str) -> Iterator[None]:
    """Bars made inside name the model worked on as ``name`` instead of its folder."""
    token = _subject.set(name)
    try:
        yield
    finally:
        _subject.reset(token)


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No bars at all inside (hf_time's and the libraries', transfers included) when ``on``."""
    if not on:
        yield
        return
    token = _enabled.set(False)
    try:
        with libraries_quiet(hub=True):
            yield
    finally:
        _enabled.reset(token)


@contextlib.contextmanager
def libraries_quiet(*, hub: bool = False) -> Iterator[None]:
    """Silence transformers' and datasets' bars inside (and huggingface_hub's transfers with ``hub``).

    transformers' switch also flips huggingface_hub's, so huggingface_hub's state is restored
    separately: transfer bars stay unless ``hub`` is asked for.
    """
    restore = []
    hub_utils = sys.modules.get("huggingface_hub.utils")
    hub_was_on = hub_utils is not None and not hub_utils.are_progress_bars_disabled()
    tf = sys.modules.get("transformers.utils.logging")
    if tf is not None and tf.is_progress_bar_enabled():
        tf.disable_progress_bar()
        restore.append(tf.enable_progress_bar)
    ds = sys.modules.get("datasets.utils.tqdm")
    if ds is not None and not ds.are_progress_bars_disabled():
        ds.disable_progress_bars()
        restore.append(ds.enable_progress_bars)
    if hub_utils is not None:
        if hub and hub_was_on:
            hub_utils.disable_progress_bars()
        elif hub_was_on and hub_utils.are_progress_bars_disabled():
            hub_utils.enable_progress_bars()  # undo transformers' side effect
    try:
        yield
    finally:
        for fn in restore:
            fn()
        if hub_utils is not None:
            if hub_was_on and hub_utils.are_progress_bars_disabled():
                hub_utils.enable_progress_bars()
            elif not hub_was_on and not hub_utils.are_progress_bars_disabled():
                hub_utils.disable_progress_bars()
