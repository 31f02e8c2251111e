"""The settings of alignment, ZipIt! and PLeaS: frozen dataclasses declared with :func:`hf_time.schema.field`.

The same declarations give defaults, ranges, help and error messages for the Python API, the CLI
(``--param K=V``) and ``hf-time merge``'s ``align:`` YAML block.
"""

from __future__ import annotations

from dataclasses import dataclass
from hf_time import schema

METHODS = ("weight", "activation")


@dataclass(frozen=True)
class MatchingConfig:
    """How permutations are searched (Git Re-Basin, Ainsworth et al. 2023, https://arxiv.org/abs/2209.04836)."""

    method: str = schema.field("weight", "weight matching (no data) or activation matching (task data)", choices=METHODS)
    task: tuple[str, ...] = schema.field((), "activation matching: built-in task(s) whose texts are run through both models")
    examples: int = schema.field(256, "activation matching: texts used (split evenly over the tasks)", ge=8)
    max_length: int = schema.field(64, "activation matching: tokens per text", ge=4)
    batch_size: int = schema.field(32, "activation matching: texts per forward pass", ge=1)
    max_iter: int = schema.field(20, "weight matching: passes over the blocks at most (stops when the residual "
                                 "permutation no longer changes)", ge=1)
    sketch: int | None = schema.field(None, "weight matching: compare each unit's weights on this many random "
                                      "coordinates (None: all, exact). Exact for permuted copies, approximate otherwise; "
                                      "makes 7B-scale matching fit a CPU", ge=16)
    seed: int = schema.field(0, "seed of the sketch and of the text sample")

    def problems(self) -> list[str]:
        """What cannot run, before anything is downloaded."""
        if self.method == "activation" and not self.task:
            return ["activation matching needs data: pass --task NAME (a built-in task, `hf-time tasks`) or use "
                    "--method weight, which needs none"]
        if self.method == "weight" and self.task:
            return [f"--task {self.task[0]} has no effect with weight matching (it reads no data); remove it or use "
                    "--method activation"]
        return []


@dataclass(frozen=True)
class ZipItConfig:
    """ZipIt! (Stoica et al. 2024, https://arxiv.org/abs/2305.03053): zip features within and across models."""

    task: tuple[str, ...] = schema.field((), "built-in task(s) whose texts give the activation correlations")
    blocks: int | None = schema.field(None, "zip the first k blocks; later blocks stay per model (None: all)", ge=0)
    alpha: float = schema.field(0.3, "similarity of an already merged feature is scaled by alpha", gt=0, le=1)
    beta: float = schema.field(0.125, "budget of same-model merges: at most beta·n/2 per model (0: only across models)",
                               ge=0, le=1)
    examples: int = schema.field(256, "texts whose activations give the correlations", ge=8)
    max_length: int = schema.field(64, "tokens per text", ge=4)
    batch_size: int = schema.field(32, "texts per forward pass", ge=1)
    seed: int = schema.field(0, "seed of the text sample")


@dataclass(frozen=True)
class PLeaSConfig:
    """PLeaS (Nasery et al. 2025, https://arxiv.org/abs/2407.02447): partial matching + layer-wise least squares."""

    task: tuple[str, ...] = schema.field((), "built-in task(s) whose texts the matching and the fit read")
    width: float = schema.field(1.0, "MLP width of the merged model relative to one model's (1: all units merged, "
                                "2: none merged)", ge=1, le=2)
    ridge: float = schema.field(1e-4, "least-squares ridge, relative to the mean input energy", ge=0)
    examples: int = schema.field(256, "texts whose activations the merged layers are fitted to", ge=8)
    max_length: int = schema.field(64, "tokens per text", ge=4)
    batch_size: int = schema.field(32, "texts per forward pass", ge=1)
    seed: int = schema.field(0, "seed of the text sample")



def to_data(config) -> dict:
    """A settings dataclass as plain YAML/JSON data (tuples as lists), e.g. ``align:`` in merge_config.yaml."""
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
