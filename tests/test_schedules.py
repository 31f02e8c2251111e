"""Gradients and filters (hf_time.schedules): evaluation by hand, parsing and its one-line errors."""

import pytest

from hf_time.schedules import Rule, Schedule, interpolate, layer_position, parse


def test_layer_position_spreads_a_slice_over_0_to_1_and_a_lone_layer_sits_at_1():
    assert [layer_position(i, 4) for i in range(4)] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert layer_position(0, 1) == 1.0  # mergekit: a slice of one layer takes the last anchor


def test_numeric_gradients_interpolate_between_the_two_nearest_anchors():
    anchors = (0.0, 0.5, 0.3, 0.7, 1.0)  # mergekit's README slerp example
    assert interpolate(anchors, 0.0) == 0.0
    assert interpolate(anchors, 0.25) == 0.5  # exactly on the second anchor
    assert interpolate(anchors, 0.375) == pytest.approx(0.4)  # halfway between 0.5 and 0.3
    assert interpolate(anchors, 1.0) == 1.0
    assert interpolate((2.0, 4.0), 1 / 3) == pytest.approx(2.0 + 2.0 / 3)


def test_boolean_and_string_gradients_pick_the_anchor_below():
    assert [interpolate((True, False), t) for t in (0.0, 0.4, 0.99, 1.0)] == [True, True, True, False]
    assert [interpolate(("a", "b", "c"), t) for t in (0.0, 0.49, 0.5, 1.0)] == ["a", "a", "b", "c"]


def test_the_first_matching_filter_wins_and_no_match_gives_none():
    s = Schedule((Rule("self_attn", (0.1,)), Rule("mlp", (0.2, 0.4)), Rule("model.layers.1.", (0.9,))))
    assert s.value("model.layers.1.self_attn.q_proj.weight", 0.5) == 0.1  # before the layer-1 rule
    assert s.value("model.layers.1.mlp.up_proj.weight", 0.5) == pytest.approx(0.3)
    assert s.value("model.layers.1.input_layernorm.weight", 0.5) == 0.9
    assert s.value("lm_head.weight", 0.0) is None  # the next level (or the default) decides
    assert Schedule((Rule("*", (7,)),)).value("anything", 0.3) == 7


def test_then_chains_levels_like_mergekits_lookup_order():
    model = Schedule((Rule("mlp", (0.2,)),))
    glob = Schedule.constant(0.5)
    chained = model.then(glob)
    assert chained.value("x.mlp.w", 0) == 0.2
    assert chained.value("x.attn.w", 0) == 0.5
    assert model.then(None) is model


def test_parse_accepts_scalars_gradients_filters_and_a_lone_filter_entry():
    problems = []
    assert parse(0.5, "t", problems).is_constant
    grad = parse([0, 1], "t", problems)
    assert grad.rules == (Rule(None, (0, 1)),) and grad.varies_with_layer
    filt = parse([{"filter": "mlp", "value": [0, 1]}, {"pattern": "attn", "value": 0.3}, {"value": 0.5}], "t", problems)
    assert filt.rules == (Rule("mlp", (0, 1)), Rule("attn", (0.3,)), Rule(None, (0.5,)))
    assert parse({"filter": "mlp", "value": 2}, "t", problems).rules == (Rule("mlp", (2,)),)
    assert problems == []


def test_yaml_form_round_trips():
    problems = []
    for raw in (0.5, [0, 0.5, 1], [{"filter": "mlp", "value": [1, 0]}, {"value": 0.5}]):
        s = parse(raw, "t", problems)
        assert parse(s.to_data(), "t", problems) == s
    assert parse([{"filter": "mlp", "value": [1, 0]}, {"value": 0.5}], "t", problems).to_data() == \
        [{"filter": "mlp", "value": [1, 0]}, {"value": 0.5}]
    assert problems == []


@pytest.mark.parametrize("raw, message", [
    ([], "t: an empty list gives no value"),
    ([0.1, {"value": 1}], "t: a list is either plain values (a gradient) or {filter, value} entries, not a mix"),
    ([{"regex": "mlp", "value": 1}], "t[0]: unknown filter syntax 'regex'"),
    ([{"filter": "mlp"}], "t[0]: a filter entry needs a `value`"),
    ([{"filter": "self_attn.*", "value": 1}], "t[0].filter: 'self_attn.*' is not a substring filter"),
    ([{"filter": "^model", "value": 1}], "t[0].filter: '^model' is not a substring filter"),
    ([{"filter": "a", "pattern": "b", "value": 1}], "t[0]: give `filter` or its alias `pattern`, not both"),
    ([{"filter": 3, "value": 1}], "t[0].filter: expected a non-empty string"),
    ([{"filter": "mlp", "value": {"x": 1}}], "t[0].value: expected a value or a list of values"),
    ([{"filter": "mlp", "value": [[1]]}], "t[0].value: a gradient is a list of plain values"),
])
def test_bad_syntax_is_one_clear_problem(raw, message):
    problems = []
    assert parse(raw, "t", problems) is None
    assert len(problems) == 1 and problems[0].startswith(message), problems
