"""Every error hf_time raises on purpose.

One base class, :class:`HfTimeError`; each subclass also inherits the built-in type a caller would
naturally catch (``ValueError``, ``KeyError``, ``FileNotFoundError``...), as huggingface_hub does, so
``except ValueError`` keeps working. Messages name the offending item and say how to fix it; the CLI
prints them as one line.
"""

from __future__ import annotations


class HfTimeError(Exception):
    """Base class of all hf_time errors."""


class ConfigError(HfTimeError, ValueError):
    """A config or parameter is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [message])
        super().__init__(message)

    @classmethod
    def from_problems(cls, what: str, problems: list[str]) -> "ConfigError":
        body = "; ".join(problems)
        return cls(f"{what}: {body}", problems)


class UnknownMethodError(HfTimeError, KeyError):
    """A merge method name is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidReferenceError(HfTimeError, ValueError):
    """A model reference is neither ``org/name[@revision]`` nor an existing local path."""


class RepoNotFoundError(HfTimeError, FileNotFoundError):
    """A Hub repository (or local folder) does not exist or is not accessible."""


class RevisionNotFoundError(HfTimeError, FileNotFoundError):
    """A revision (branch, tag or commit) does not exist in a repository."""


class MissingWeightsError(HfTimeError, FileNotFoundError):
    """A model folder or repository holds no loadable weights."""


class UnsafeCheckpointError(HfTimeError, ValueError):
    """Only a pickle checkpoint is available and pickle loading was not allowed."""


class IncompatibleExpertsError(HfTimeError, ValueError):
    """Experts do not match the base: architecture, tensor names or shapes differ.

    Attributes:
        tensor: the first offending tensor name (None for architecture-level mismatches).
        expected / found: the shapes (or values) that differ.
    """

    def __init__(self, message: str, tensor: str | None = None, expected=None, found=None):
        self.tensor = tensor
        self.expected = expected
        self.found = found
        super().__init__(message)


class OutputExistsError(HfTimeError, FileExistsError):
    """The output directory exists and overwrite was not requested."""


class PublishError(HfTimeError, RuntimeError):
    """Publishing to the Hub failed or would be inconsistent (e.g. a tag already points elsewhere)."""


class UnknownTaskError(ConfigError, KeyError):
    """A task name is not among the built-in tasks; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class TaskDataNotFoundError(HfTimeError, FileNotFoundError):
    """A built-in task's data package is not installed; the message names the pip command."""


class UnsupportedAdapterError(HfTimeError, ValueError):
    """A PEFT adapter uses a feature hf_time cannot merge exactly (DoRA, LoRA bias, modules_to_save...).

    The message names the config field or tensor key and the fix; nothing is merged approximately.
    """


class MissingAdapterConfigError(HfTimeError, FileNotFoundError):
    """An adapter repository or folder has adapter weights but no ``adapter_config.json``."""


class UnknownExpertError(HfTimeError, KeyError):
    """A reversible snapshot has no expert with the requested name or index; the message lists them."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class TimelineConflictError(HfTimeError, RuntimeError):
    """A timeline repo already holds steps made from another config (their content keys differ).

    Resuming would mix two timelines in one history; the message names the step and the fix (a new
    ``name``, or deleting the repo).
    """


class CorruptCheckpointError(HfTimeError, ValueError):
    """A weight file or its index cannot be read as what it claims to be (truncated, malformed header,
    offsets outside the file, an index pointing outside its folder). The message names the file."""


class NonFiniteError(HfTimeError, ValueError):
    """A merge produced NaN or Inf; the message names the tensor and the inputs holding non-finite values."""


class HubConnectionError(HfTimeError, ConnectionError):
    """The Hub endpoint could not be reached (server down, no network, DNS), after bounded retries."""


class HubRequestError(HfTimeError, RuntimeError):
    """The Hub answered an error hf_time cannot recover from (after bounded retries for 5xx/429); the
    message names the operation, the status and what to do (a token with access, try again later)."""


class IncompatibleTaskError(ConfigError):
    """A task cannot be trained or scored on this model or tokenizer: a generation task on an encoder,
    chat messages and a tokenizer without a chat template."""


class UnsupportedArchitectureError(HfTimeError, ValueError):
    """A model whose permutation symmetries hf_time does not know (alignment, ZipIt!, PLeaS); the message
    names the model type or tensor and the architectures that are supported."""


class DistributedRunError(HfTimeError, RuntimeError):
    """Raised on the non-main processes of a ``torchrun``/``accelerate launch`` run when the main
    process failed; the message carries the main process's error (fix that one)."""


class StatisticMismatchError(HfTimeError, ValueError):
    """A per-expert statistic (a Fisher) was computed on other weights than the expert being merged, or for
    another base; the message names the expert and the command that recomputes it."""


class TaskDataError(ConfigError):
    """Task data cannot serve what was asked of it (no labels for a Fisher or an evaluation, too few examples)."""


class LmEvalTaskNotFoundError(ConfigError, KeyError):
    """An lm-evaluation-harness task name is not in its index (nor in --lm-eval-include); the message lists close names."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""
