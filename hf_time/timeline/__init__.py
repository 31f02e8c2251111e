"""Timelines: TIME's loop of init -> finetune -> deploy, run end to end on the Hub.

    from hf_time.timeline import load_timeline_config, run_timeline
    run = run_timeline(load_timeline_config("recipes/configs/best_in_time.yaml"))
    print(run.state.accuracy_matrix(), run.state.final_metrics())

Modules: :mod:`~hf_time.timeline.config` (the YAML schema), :mod:`~hf_time.timeline.data` (tasks and
their content keys), :mod:`~hf_time.timeline.strategies` (init/deploy as a DAG of keyed nodes),
:mod:`~hf_time.timeline.experts` (training, replay, LoRA), :mod:`~hf_time.timeline.store` (local cache
and Hub copies of nodes), :mod:`~hf_time.timeline.runner` (the loop, the Hub layout, resume),
:mod:`~hf_time.timeline.state`, :mod:`~hf_time.timeline.card`, :mod:`~hf_time.timeline.report` and
:mod:`~hf_time.timeline.cli`. The science is in shared/design/methods.md §1.
"""

from hf_time.timeline.config import TimelineConfig, load_timeline_config, timeline_config_from_dict


def __getattr__(name):
    # Lazy: the runner pulls in torch, transformers and huggingface_hub; the config does not.
    if name in ("run_timeline", "TimelineRun", "TimelineRunner", "StepTimings"):
        from hf_time.timeline import runner

        return getattr(runner, name)
    if name in ("TimelineState", "StepRecord", "NodeRecord"):
        from hf_time.timeline import state

        return getattr(state, name)
    if name in ("load_state",):
        from hf_time.timeline.report import load_state

        return load_state
    raise AttributeError(f"module 'hf_time.timeline' has no attribute {name!r}")


__all__ = ["TimelineConfig", "load_timeline_config", "timeline_config_from_dict", "run_timeline", "TimelineRun",
           "TimelineRunner", "StepTimings", "TimelineState", "StepRecord", "NodeRecord", "load_state"]
