"""The one pipeline every output of hf_time goes through.

    refs -> resolve   pinned inputs: shas, configs, safetensors headers (nothing downloaded yet)
         -> plan      typed and validated; an option the method cannot honour is an error here
         -> execute   one executor per method kind (dense | lowrank | sequential | data), streaming tensors
         -> artifact  the written files + the typed Lineage of the plan that ran
         -> snapshot  ONE writer: weights, hf_time.json, merge_config.yaml, card
         -> publish   ONE commit, optional tag; identical content = no commit

Modules: :mod:`.plan`, :mod:`.resolve`, :mod:`.executors`, :mod:`.artifact`, :mod:`.snapshot`,
:mod:`.cards` (which card a lineage gets), :mod:`.revert` (an RMM expert rebuilt through the same
stages) and :mod:`.run` (the chain). ``hf_time.merge``/``fold``/``revert`` and the timeline call it.
Dense merges with per-tensor values or an assembled output also use :mod:`.tensor_params` (gradients,
filters and slices as one lookup chain per parameter), :mod:`.layout` (where each output tensor comes
from), :mod:`.tokenizer` (``tokenizer_source``, ``chat_template``) and :mod:`.tensor_values` (what a
tensor of a snapshot got, read back from its lineage).
"""

from hf_time.pipeline.plan import Plan, RunOptions, make_plan
from hf_time.pipeline.run import (
    MergeResult, prepare, produce, record_evaluation, record_training, run, run_revert,
)

__all__ = ["MergeResult", "Plan", "RunOptions", "make_plan", "prepare", "produce", "record_evaluation",
           "record_training", "run", "run_revert"]
