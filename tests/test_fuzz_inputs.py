"""Property-based fuzzing of everything that reads user or third-party data: every input ends in a value
or a typed hf_time error (:class:`~hf_time.errors.HfTimeError`), never another exception.

Targets: the model-reference parser, the merge and timeline YAML loaders (arbitrary YAML-shaped data,
and mutations of valid configs), the safetensors header reader (arbitrary and mutated bytes) and the
lineage reader. Examples are derandomized, so the suite is reproducible.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_time.config import merge_config_from_dict
from hf_time.errors import HfTimeError
from hf_time.io import read_safetensors_layout
from hf_time.lineage import Lineage
from hf_time.refs import parse_ref
from hf_time.timeline.config import timeline_config_from_dict
from probes import record

FUZZ = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["ties", "org/x", "0.5", "../../etc", "null", "\n"]))
yamlish = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                       max_leaves=20)


def typed(fn, value, *, what: str) -> None:
    """Run ``fn(value)``: a result or an HfTimeError passes; anything else fails the test (and is recorded)."""
    try:
        fn(value)
    except HfTimeError as e:
        assert str(e), f"{what}: an error without a message"
        record("bad input", f"fuzz {what}", ok=True)
        return
    except Exception as e:  # noqa: BLE001 - the property under test: no other exception escapes
        record("bad input", f"fuzz {what}", ok=False, detail=f"{type(e).__name__}: {e}"[:200])
        raise AssertionError(f"{what}({value!r:.200}) raised {type(e).__name__}: {e}") from e
    record("bad input", f"fuzz {what}", ok=True)


@FUZZ
@given(st.one_of(st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                 st.from_regex(r"[A-Za-z0-9_.\-]{1,10}/[A-Za-z0-9_.\-]{1,10}(@[^\s]{0,12})?", fullmatch=True)))
def test_ref_parser(text):
    typed(parse_ref, text, what="ref")


VALID_MERGE = {"merge_method": "ties", "base_model": "org/base",
               "models": [{"model": "org/a", "parameters": {"weight": 0.5, "density": 0.4}}, {"model": "org/b"}],
               "parameters": {"lambda": 1.0}, "dtype": "bfloat16"}
VALID_TIMELINE = {"name": "t", "base": "org/base", "tasks": ["movie_sentiment", "sms_spam"], "held_out": ["tweet_sentiment"],
                  "strategy": {"init": "ema", "deploy": "ema", "method": "linear"}, "training": {"steps": 5}}


def mutations(valid: dict) -> st.SearchStrategy:
    """A valid config with one key path replaced by arbitrary YAML-shaped data, or deleted."""
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append(path + (k,))
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append(path + (i,))
                walk(v, path + (i,))

    walk(valid, ())

    def apply(args):
        path, value, delete = args
        data = json.loads(json.dumps(valid))
        node = data
        for key in path[:-1]:
            node = node[key]
        if delete and isinstance(node, dict):
            node.pop(path[-1])
        else:
            node[path[-1]] = value
        return data

    return st.tuples(st.sampled_from(paths), yamlish, st.booleans()).map(apply)


@FUZZ
@given(st.one_of(yamlish, mutations(VALID_MERGE)))
def test_merge_config_loader(data):
    typed(merge_config_from_dict, data, what="merge config")


@FUZZ
@given(st.one_of(yamlish, mutations(VALID_TIMELINE)))
def test_timeline_config_loader(data):
    typed(timeline_config_from_dict, data, what="timeline config")


def _valid_header() -> bytes:
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(22)


@FUZZ
@given(st.one_of(
    st.binary(max_size=64),
    st.tuples(st.integers(0, 300), st.binary(min_size=1, max_size=8)).map(
        lambda m: _valid_header()[:m[0]] + m[1] + _valid_header()[m[0] + len(m[1]):]),
    yamlish.map(lambda h: (lambda b: struct.pack("<Q", len(b)) + b + bytes(32))(json.dumps(h, default=str).encode())),
))
def test_safetensors_header_reader(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(blob)
    typed(read_safetensors_layout, path, what="safetensors header")


@FUZZ
@given(st.one_of(yamlish, mutations({"schema_version": 2, "kind": "merge", "output": {"format": "model", "files": {}},
                                     "method": {"name": "ties", "kind": "dense"}, "base": {"ref": "org/b"},
                                     "experts": [{"ref": "org/e", "weight": 1.0}]})))
def test_lineage_reader(data):
    typed(Lineage.from_dict, data, what="lineage")


@pytest.mark.parametrize("field", ["base", "previous", "source", "output", "method"])
def test_lineage_fields_of_the_wrong_json_type_are_typed_errors(field):
    """Found by the fuzzer: a list where a record belongs."""
    data = {"schema_version": 2, "kind": "merge", "output": {"format": "model"}, field: [1]}
    with pytest.raises(HfTimeError, match="not a valid hf_time lineage"):
        Lineage.from_dict(data)


def test_the_valid_seeds_are_valid(tmp_path):
    """The mutations start from inputs that load, so every failure found is the mutation's."""
    merge_config_from_dict(VALID_MERGE)
    timeline_config_from_dict(VALID_TIMELINE)
    path = tmp_path / "m.safetensors"
    path.write_bytes(_valid_header())
    assert list(read_safetensors_layout(path)) == ["a", "b"]


@pytest.mark.parametrize("text", ["org/name\n", " org/name ", "org/name@main"])
def test_refs_are_stripped_not_rejected_for_surrounding_whitespace(text):
    assert parse_ref(text).repo_id == "org/name"
