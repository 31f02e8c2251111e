"""Merging two models of different inits into one trunk with a head per model (no file I/O here).

Every method is a set of zips, one per slot (:mod:`hf_time.align.zipit`), applied with the same
formula, plus for PLeaS a least-squares refit of the linear layers:

- naive averaging: identity zips (unit i of A with unit i of B);
- aligned averaging: permutation zips of an :class:`~hf_time.align.perms.Alignment` (Git Re-Basin);
- ZipIt!: greedy zips of the residual stream and the MLPs of the first ``blocks`` blocks over the joint
  correlation of their activations, heads matched and averaged;
- PLeaS: partial MLP zips of an activation matching, then :func:`fit_linears`.

:func:`assemble` turns models' tensors and zips into the trunk (embeddings and merged blocks) and each
model's own part after it, the layout :mod:`hf_time.align.multihead` stores.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from hf_time.align.activation_matching import activation_matching, head_costs_from_activations
from hf_time.align.activations import Batch, CrossMoments, Point, features
from hf_time.align.assign import solve_heads
from hf_time.align.perms import Alignment
from hf_time.align.pleas import MERGED, LinearFit, partial_zip
from hf_time.align.spec import ArchSpec, TensorSpec
from hf_time.align.zipit import Zip, identity_zip, merge_tensor, permutation_zip, zipit_zip

Zips = dict[str, Zip]


def alignment_zips(spec: ArchSpec, alignment: Alignment, layers: int | None = None) -> Zips:
    """Averaging after ``alignment``: a permutation zip for the residual stream and every slot of the first
    ``layers`` blocks (all by default)."""
    layers = spec.layers if layers is None else layers
    return {slot: permutation_zip(idx) for slot, idx in alignment.indices(spec).items()
            if slot == "res" or int(slot.rsplit(".", 1)[1]) < layers}


def naive_zips(spec: ArchSpec) -> Zips:
    """Naive averaging: unit i with unit i, everywhere."""
    return {slot: identity_zip(n) for slot, n in spec.slots.items()}


def zipit_zips(spec: ArchSpec, stats: Mapping[str, CrossMoments], blocks: int, *, alpha: float, beta: float) -> Zips:
    """ZipIt!: residual stream and MLPs of blocks < ``blocks`` zipped by joint correlation, heads matched.

    ``stats`` must hold full moments (``full``) at ``res.-1`` ... ``res.{blocks-1}`` and ``mlp.L``.
    """
    res = sum(stats[f"res.{i}"].joint_correlation() for i in range(-1, blocks)) / (blocks + 1)
    zips = {"res": zipit_zip(res, spec.hidden, alpha=alpha, beta=beta)}
    for layer in range(blocks):
        zips[f"mlp.{layer}"] = zipit_zip(stats[f"mlp.{layer}"].joint_correlation(), spec.intermediate, alpha=alpha,
                                         beta=beta)
        heads = solve_heads(head_costs_from_activations(stats, layer, spec.attention), spec.attention)
        for kind, idx in heads.indices(spec.attention).items():
            zips[f"{kind}.{layer}"] = permutation_zip(idx)
    return zips


def pleas_zips(spec: ArchSpec, stats: Mapping[str, CrossMoments], width: float) -> tuple[Zips, dict[str, torch.Tensor]]:
    """PLeaS's partial matching: activation matching, then every MLP partially merged to ``width``.

    Returns:
        The zips and, for the partially merged slots, each merged unit's kind (merged / only A / only B).
    """
    alignment = activation_matching(spec, stats).alignment
    zips = alignment_zips(spec, alignment)
    kinds = {}
    for layer, perm in enumerate(alignment.mlp):
        corr = stats[f"mlp.{layer}"].correlation()
        zips[f"mlp.{layer}"], kinds[f"mlp.{layer}"] = partial_zip(perm, corr[torch.arange(perm.numel()), perm], width)
    return zips, kinds


def linear_layers(spec: ArchSpec, names: set[str]) -> list[tuple[TensorSpec, str | None]]:
    """The linear weights inside the blocks (both axes permuted) and their biases, when present."""
    out = []
    for t in spec.tensors.values():
        if t.layer is not None and len(t.axes) == 2 and all(a is not None for a in t.axes) and t.name.endswith(".weight"):
            bias = t.name[: -len("weight")] + "bias"
            out.append((t, bias if bias in names else None))
    return out


def fit_linears(spec: ArchSpec, models: tuple[nn.Module, nn.Module], batches: Sequence[Batch], zips: Zips,
                kinds: Mapping[str, torch.Tensor], ridge: float, progress: Callable | None = None) -> dict[str, torch.Tensor]:
    """PLeaS's least squares: every linear layer of the blocks refitted in the merged basis.

    Returns:
        New merged tensors by name (weights and biases).
    """
    layers = linear_layers(spec, set(spec.tensors))
    points = {}
    for t, _ in layers:
        module = t.name[: -len(".weight")]
        points[f"{module}:in"], points[f"{module}:out"] = Point(module, "in"), Point(module, "out")
    fits: dict[str, LinearFit] = {}
    for batch in (progress(batches) if progress else batches):
        fa, fb = features(models[0], batch, points), features(models[1], batch, points)
        for t, bias in layers:
            module = t.name[: -len(".weight")]
            z_out, z_in = zips[t.axes[0].slot], zips[t.axes[1].slot]
            x = fa[f"{module}:in"].float() @ z_in.merge[0].T + fb[f"{module}:in"].float() @ z_in.merge[1].T
            y = fa[f"{module}:out"].float() @ z_out.merge[0].T + fb[f"{module}:out"].float() @ z_out.merge[1].T
            if t.name not in fits:
                fits[t.name] = LinearFit(x.shape[1], y.shape[1], bias is not None)
            fits[t.name].update(x, y)
    out = {}
    for t, bias in layers:
        width = lambda slot: kinds.get(slot, torch.full((zips[slot].width,), MERGED))  # noqa: E731
        w, b = fits[t.name].solve(width(t.axes[1].slot), width(t.axes[0].slot), ridge)
        out[t.name] = w
        if bias is not None:
            out[bias] = b
    return out


def assemble(spec: ArchSpec, specs: Sequence[ArchSpec], sources: Sequence, zips: Zips, blocks: int,
             overrides: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The trunk's tensors (base-model names) and each model's own tensors after it.

    Args:
        spec: the shared layout (the first model's); ``specs``: each model's own (task heads may differ).
        sources: per model, where its tensors are read (``get(name)``).
        zips: per slot, how features are merged (slots of blocks >= ``blocks`` are not needed).
        blocks: blocks in the trunk.
        overrides: merged tensors computed otherwise (PLeaS's least squares), by checkpoint name.

    The trunk holds the merged embeddings, blocks < ``blocks`` and, so that it is a complete standard
    model, the merged final norm / pooler; the heads keep their own copies of those, which is what runs.
    """
    overrides = overrides or {}
    trunk = {}
    for name, t in spec.tensors.items():
        stage = spec.stage(name)
        if t.head or (stage == "block" and t.layer >= blocks):
            continue
        merged = overrides.get(name)
        if merged is None:
            merged = merge_tensor([s.get(name) for s in sources], t, zips)
        trunk[name[len(spec.prefix):]] = merged.to(torch.float32)
    heads = []
    for s, own in zip(sources, specs):
        heads.append({name: s.get(name) for name, t in own.tensors.items()
                      if own.stage(name) == "post" or (t.layer is not None and t.layer >= blocks)})
    return trunk, heads

