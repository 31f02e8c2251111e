"""Each init/deploy strategy produces the hand-computed weights over 3 steps on a tiny model.

The fake trainer makes θ^s_t = init_t + d_t with d = (1, 2, 4), so with θ_0 = B every model of the
timeline is B + c for a constant c computed by hand below (linear = weight averaging, w = 0.5).
"""

from __future__ import annotations

import pytest
import torch
from test_timeline_common import base_tensors, fake_evaluator, fake_trainer, save_tiny_bert, timeline_dict

from hf_time.hub import Hub
from hf_time.timeline.config import timeline_config_from_dict
from hf_time.timeline.runner import run_timeline

# (init, deploy) -> constants c_t of the deployed model B + c_t after steps 1, 2, 3.
#   ema chain: r_0 = B, θ_t = init_t + d_t, r_t = ½θ_t + ½r_{t−1}
#   merge_all: mean of the experts so far
EXPECTED = {
    ("base", "latest"): [1, 2, 4],                      # θ_t = B + d_t
    ("latest", "latest"): [1, 3, 7],                    # sequential finetuning: deltas accumulate
    ("base", "merge_all"): [1, 1.5, 7 / 3],             # offline merging: mean of d_1..d_t
    ("base", "ema"): [0.5, 1.25, 2.625],                # r_t = ½(B + d_t) + ½ r_{t−1}
    ("ema", "ema"): [0.5, 1.5, 3.5],                    # Best-in-TIME: θ_2 = r_1 + 2 = B + 2.5, ...
    ("ema", "latest"): [1, 2.5, 5.5],                   # expert t trained from r_{t−1}
    ("merge_all", "merge_all"): [1, 2, 10 / 3],         # θ = 1, 3 (from mean 1), 6 (from mean 2)
    ("latest", "ema"): [0.5, 1.75, 4.375],              # θ = 1, 3, 7; r = ½θ_t + ½r_{t−1}
}


@pytest.fixture(scope="module")
def published_base(hub, tmp_path_factory):
    folder = save_tiny_bert(tmp_path_factory.mktemp("strategies") / "base")
    Hub(endpoint=hub.url).publish(folder, "tests/timeline-tiny-base", commit_message="tiny base")
    return folder


def _check(repo, hub, base, constants):
    h = Hub(endpoint=hub.url)
    for t, c in enumerate(constants, start=1):
        folder = h.download(h.resolve(f"{repo}@step-{t}"), ["*.safetensors"])
        got = base_tensors(folder)
        for k, v in base.items():
            if v.is_floating_point():
                torch.testing.assert_close(got[k], v + c, rtol=0, atol=1e-5, msg=f"step {t} {k}")
            else:  # integer buffers are carried from the base
                assert torch.equal(got[k], v)


@pytest.mark.parametrize(("init", "deploy"), list(EXPECTED))
def test_strategy_weights_over_three_steps(hub, published_base, tmp_path, init, deploy):
    name = f"strat-{init}-{deploy}".replace("_", "-")
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/timeline-tiny-base", name, init=init, deploy=deploy))
    run = run_timeline(config, hub=Hub(endpoint=hub.url), work_dir=tmp_path / "work", trainer=fake_trainer,
                       evaluator=fake_evaluator, progress=False)
    assert run.state.done == 3 and run.skipped == ()
    _check(config.repo_id, hub, base_tensors(published_base), EXPECTED[(init, deploy)])


def test_sequential_ema_fold_matches_dense_ema(hub, published_base, tmp_path):
    """The registry's sequential `ema` (through hf_time.sequential.fold) equals the dense EMA chain."""
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/timeline-tiny-base", "strat-fold-ema",
                                                     init="ema", deploy="ema", method="ema", params={"w": 0.5}))
    run = run_timeline(config, hub=Hub(endpoint=hub.url), work_dir=tmp_path / "work", trainer=fake_trainer,
                       evaluator=fake_evaluator, progress=False)
    assert run.state.fold_state["t"] == 3 and run.state.fold_state["method"] == "ema"
    _check(config.repo_id, hub, base_tensors(published_base), EXPECTED[("ema", "ema")])


def test_ema_chain_with_task_arithmetic_is_anchored_at_the_base(hub, published_base, tmp_path):
    """r_j = θ_0 + λ(w·τ_j + (1−w)·τ(r_{j−1})): with λ = 1 the same constants as weight averaging."""
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/timeline-tiny-base", "strat-ema-ta",
                                                     init="base", deploy="ema", method="task_arithmetic",
                                                     params={"lambda": 1.0}))
    run_timeline(config, hub=Hub(endpoint=hub.url), work_dir=tmp_path / "work", trainer=fake_trainer,
                 evaluator=fake_evaluator, progress=False)
    _check(config.repo_id, hub, base_tensors(published_base), EXPECTED[("base", "ema")])


def test_merge_all_time_weights(hub, published_base, tmp_path):
    """Linear time weights w_j ∝ j: step 3 deploys (1·1 + 2·2 + 3·4)/6 = 17/6."""
    config = timeline_config_from_dict(timeline_dict(tmp_path, "tests/timeline-tiny-base", "strat-time-weights",
                                                     init="base", deploy="merge_all", time_weights="linear"))
    run_timeline(config, hub=Hub(endpoint=hub.url), work_dir=tmp_path / "work", trainer=fake_trainer,
                 evaluator=fake_evaluator, progress=False)
    _check(config.repo_id, hub, base_tensors(published_base), [1, 5 / 3, 17 / 6])
