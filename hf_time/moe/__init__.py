"""MoE upcycling: dense experts of one base turned into a Mixtral or Qwen2-MoE model (``hf-time moe``).

:func:`hf_time.moe.build.build_moe` (also :func:`hf_time.api.moe`) runs a :class:`MoeConfig`
(mergekit-moe's YAML keys, :func:`load_moe_config`) and writes a snapshot with lineage and card,
optionally published as one commit. Modules: ``config`` (the YAML), ``router`` (router
initialisation), ``layout`` (the output's tensors and config), ``build`` (the stages), ``card``,
``cli``. This package only re-exports the config, so the card renderer can import it early.
"""

from hf_time.moe.config import MoeConfig, MoeExpert, load_moe_config, moe_config_from_dict

__all__ = ["MoeConfig", "MoeExpert", "load_moe_config", "moe_config_from_dict"]
