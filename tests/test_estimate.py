"""Issue 10.4: an estimate measured on this machine, with its conditions, before the long work."""

from __future__ import annotations

from test_timeline_common import TASKS, save_tiny_bert, write_toy_tasks

from hf_time.estimate import Speed, format_estimate, measure_speed


def test_the_estimate_multiplies_measured_speeds_and_states_the_conditions():
    speed = Speed(s_per_step=0.5, tokens_per_s=600.0, s_per_text=0.004, load=3.2, cpus=2)
    assert speed.seconds(training_steps=120, texts=2000) == 68.0
    assert format_estimate(speed, training_steps=120, texts=2000, what="3 experts and 4 evaluations") == (
        "estimate: about 68 s for 3 experts and 4 evaluations (120 training steps at 0.50 s/step, 600 tokens/s, "
        "and 2000 texts scored at 4 ms each; measured just now, load 3.2 on 2 CPUs; more if the load rises)")
    slow = Speed(s_per_step=7.5, tokens_per_s=54.0, s_per_text=0.056, load=None, cpus=2)
    assert format_estimate(slow, training_steps=120, texts=2000, what="x").startswith("estimate: about 17 min for x (")
    assert "measured just now, 2 CPUs;" in format_estimate(slow, training_steps=1, texts=1, what="x")


def test_measure_speed_times_real_steps_and_an_evaluation(tmp_path, capsys):
    from hf_time.tasks import task_from_dataset
    from hf_time.training import TrainingConfig

    base = save_tiny_bert(tmp_path / "base")
    paths = write_toy_tasks(tmp_path / "data")
    task = task_from_dataset("a", paths["a"], label_descriptions=TASKS["a"][2], n_test=6)
    speed = measure_speed(base, task, TrainingConfig(steps=40, batch_size=4, max_length=8), steps=2)
    assert speed.s_per_step > 0 and speed.tokens_per_s > 0 and speed.s_per_text > 0 and speed.cpus >= 1
    assert speed.load is None or speed.load >= 0
    err = capsys.readouterr().err
    assert "measuring this machine's speed · training a expert · 2 steps" in err
    assert "measuring this machine's speed · evaluating base · 1 task" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "data"]  # the timing run left nothing behind
