"""LoRA experts and low-rank merging: exact adapter-space merges and reversible merging (RMM).

The package is split by responsibility, and the data flows one way:

* :mod:`~hf_time.lowrank.adapters` — reading PEFT adapter folders: config checks, PEFT's scaling
  rules, key → module → base tensor mapping.
* :mod:`~hf_time.lowrank.sources` — a LoRA expert as a weight source (base + ΔW) for the dense
  engine, and opening adapter references before any base weight is downloaded.
* :mod:`~hf_time.lowrank.writer` / :mod:`~hf_time.lowrank.snapshot` — standard PEFT adapter
  folders out; the RMM snapshot format (basis, coefficients) in and out.
* :mod:`~hf_time.lowrank.cards` renders the cards; :mod:`~hf_time.lowrank.cli` adds ``hf-time revert``.

The pure factor types (:class:`~hf_time.merges.factors.LoraModule`, ``ModuleResult``) and the
low-rank methods live in :mod:`hf_time.merges` like every other method; the low-rank executor and
the revert stage are part of :mod:`hf_time.pipeline`. Public entry points: :func:`hf_time.api.merge`
with ``method="lora_cat" | "lora_svd" | "rmm"`` (the same call and CLI as a dense merge) and
:func:`hf_time.api.revert`. Nothing is imported here eagerly.
"""
