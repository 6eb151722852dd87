"""Checks of the composed config and its command-line overrides, before anything is built; the defaults the least
config leaves out.

A value of the wrong type (``trainer.max_epochs=abc``) otherwise reaches the constructor and fails deep inside it
(Lightning: a bare ``AssertionError``), or is accepted and misbehaves later. Like torchtune's config validation, the
constructor's signature is the schema: the override's value is checked against the annotation of the parameter it
sets, and the error names the override and the expected type. A key added with ``+`` that nothing reads, a modality
without an encoder, a GPU preset without a GPU are refused the same way, naming the key to change.

Nothing here imports torch at the top: a config error is answered before the heavy libraries load.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

if TYPE_CHECKING:
    import pytorch_lightning as pl

log = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parent.parent.parent / "conf")


class ConfigError(ValueError):
    """A config combination that cannot work; the message names the key to change."""


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a config group like ``callbacks`` or ``logger``."""
    import hydra.utils

    return [hydra.utils.instantiate(node) for node in (group or {}).values() if node is not None]


def check_overrides(cfg: DictConfig, overrides: list[str]) -> None:
    """Every check of the command line that needs nothing built: added keys, value types, accelerator, precision."""
    check_added_keys(cfg, overrides)
    check_value_types(cfg, overrides)
    check_accelerator(cfg.trainer)
    check_precision(cfg.trainer)


def check_modalities(cfg: DictConfig) -> None:
    """Every modality in ``modalities`` needs an encoder config at ``encoder.<modality>``."""
    modalities = list(cfg.modalities)
    if not modalities:
        raise ConfigError("`modalities` is empty: list at least one, e.g. modalities=[image]")
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"`modalities` lists a modality twice: {modalities}")
    encoders = cfg.get("encoder") or {}
    for name in modalities:
        if encoders.get(name) is None:
            raise ConfigError(
                f"modality {name!r} in `modalities` has no encoder: add one with "
                f"`+encoder/<kind>@encoder.{name}=<config>` (configured encoders: {sorted(encoders)}) "
                f"or remove {name!r} from `modalities`"
            )


def check_added_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """A key added with ``+key=value`` or ``++key=value`` must be read by something; otherwise a typo would be
    silently ignored.

    Read are: keys in or under a node built from ``_target_`` (its constructor rejects unknown arguments), keys an
    interpolation refers to (``+lr=0.01
    model.optimizer.lr=${lr}``), Hydra's own, and for ``++`` keys the config already had (``++`` then only sets
    them). Config group overrides (``+encoder/text@encoder.caption=transformer``, ``+debug=limit``) add whole config
    files and are not checked.
    """
    text = OmegaConf.to_yaml(cfg)  # unresolved: interpolations stay as written
    parsed = OverridesParser.create().parse_overrides(overrides)
    without_forced: DictConfig | None = None  # the config without the ++ overrides, composed when first needed
    for override in parsed:
        key = override.key_or_group
        group = override.package is not None or "/" in key or (Path(CONFIG_DIR) / key).is_dir()
        if not (override.is_add() or override.is_force_add()) or group or key.startswith("hydra."):
            continue
        parts = key.split(".")
        nodes = [OmegaConf.select(cfg, ".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        if any(isinstance(node, DictConfig) and "_target_" in node for node in nodes):
            continue
        if "${" + key + "}" in text or "${" + key + "." in text:
            continue
        if override.is_force_add():
            if without_forced is None:
                without_forced = _compose([o.input_line for o in parsed if not o.is_force_add()])
            if OmegaConf.select(without_forced, key, default=_ABSENT) is not _ABSENT:
                continue
        null = next((i for i, node in enumerate(nodes[:-1]) if node is None), None)
        if null is not None:  # another override set a node above the key to null: nothing builds or reads it
            hint = f"`{'.'.join(parts[: null + 1])}` is null, so nothing reads keys under it."
        else:  # the added part starts at the first node that holds nothing but the added path: suggest a near name
            first = next(i for i in range(len(parts)) if i == len(parts) - 1 or len(nodes[i]) == 1)
            parent = cfg if first == 0 else nodes[first - 1]
            near = difflib.get_close_matches(parts[first], [k for k in parent if k != parts[first]], n=1)
            hint = f"did you mean `{'.'.join([*parts[:first], near[0]])}`?" if near else "check the spelling."
        raise ConfigError(
            f"`{override.input_line}` adds `{key}`, which nothing reads (it would be silently ignored): {hint} "
            "Add keys with `+` only inside a node with `_target_` (they are constructor arguments) or use them "
            "in an interpolation."
        )


_ABSENT = object()


def _compose(overrides: list[str]) -> DictConfig:
    """The training config composed with ``overrides`` (in Hydra's app when one runs, else from conf/)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "train"
    if GlobalHydra.instance().is_initialized():
        return compose(name, overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=overrides)


def apply_defaults(cfg: DictConfig) -> None:
    """Fill in what the least config leaves out, in place, before anything is built.

    ``modalities: null`` becomes every modality the datamodule configures (a manifest's ``columns``, in order),
    else every configured ``encoder``. A modality of ``columns`` without ``encoder.<name>`` gets
    ``encoder_defaults.<kind>`` (its ``kind`` there). Then ``encoder`` keeps only the
    run's modalities and ``encoder_defaults`` is dropped, so the saved config lists just the encoders used.
    """
    columns = cfg.datamodule.get("columns") or {}
    with open_dict(cfg):
        if cfg.get("modalities") is None:
            cfg.modalities = list(columns) or list(cfg.get("encoder") or {})
        defaults = cfg.get("encoder_defaults") or {}
        encoders = cfg.get("encoder") or {}
        chosen = {}
        for name in cfg.modalities:
            kind = (columns.get(name) or {}).get("kind")
            node = encoders.get(name)
            if node is None and kind is not None and defaults.get(kind) is not None:
                node = defaults[kind]
            if node is not None:
                chosen[name] = node
        cfg.encoder = chosen
        cfg.pop("encoder_defaults", None)


def default_monitor(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Resolve ``monitor.metric=auto``: the objective's choice (``Objective.auto_monitor``: ``val/recall@1`` for
    contrastive), else from the task and the training split's labels (:meth:`TaskSpec.auto_monitor`)."""
    if cfg.monitor.metric != "auto":
        return
    task = datamodule.task
    objective = cfg.get("objective")
    metric = get_object(objective._target_).auto_monitor if objective is not None else None
    metric = metric or task.auto_monitor(lambda: datamodule.dataset("train").target)
    log.info("monitor.metric=auto: monitoring %s (%s task)", metric, task.kind)
    cfg.monitor.metric = metric


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """A GPU preset on a machine without one fails before any data is built, saying what to use instead."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda"):
        return
    import torch  # only for a GPU preset: asking torch is the only way to know

    if not torch.cuda.is_available():
        if accelerator == "gpu" and torch.backends.mps.is_available():
            return
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu, trainer=ddp) but torch sees no GPU "
            f"(torch {torch.__version__}, CUDA available: no): use trainer=cpu, or trainer=ddp_cpu for "
            "data-parallel training on CPU processes"
        )


def check_precision(trainer_cfg: DictConfig) -> None:
    """float16 autocast needs a GPU; Lightning would quietly train in bfloat16 on a CPU instead."""
    if str(trainer_cfg.get("precision")) not in ("16-mixed", "16"):
        return
    import torch  # only for float16: whether a GPU is there decides

    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        raise ConfigError(
            "trainer.precision=16-mixed needs a CUDA GPU (trainer=gpu); on a CPU use trainer.precision=bf16-mixed "
            "or 32-true"
        )


class ConfigValueError(ConfigError):
    """A command-line value of the wrong type for the constructor argument it sets."""


def check_value_types(cfg: DictConfig, overrides: list[str]) -> None:
    """Raise ``ConfigValueError`` for an override ``a.b.key=value`` whose value does not fit ``key``'s annotation in
    the constructor of the ``_target_`` at ``a.b``. Keys without a ``_target_`` parent or without a usable
    annotation are left to their readers."""
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if override.package is not None or "/" in key or override.is_sweep_override() or "." not in key:
            continue
        parent_key, name = key.rsplit(".", 1)
        parent = OmegaConf.select(cfg, parent_key, default=None)
        if not isinstance(parent, DictConfig) or "_target_" not in parent or name not in parent:
            continue
        expected = _annotation(str(parent._target_), name)
        if expected is None:
            continue
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if isinstance(value, DictConfig) or OmegaConf.is_config(value) or _fits(value, expected):
            continue
        raise ConfigValueError(
            f"`{override.input_line}`: {key} must be {_describe(expected)} (the `{name}` argument of "
            f"{parent._target_}), got {value!r} ({type(value).__name__})"
        )


def _annotation(target: str, name: str) -> Any:
    """The type hint of argument ``name`` of ``target``'s constructor (or function), or None when unknown."""
    try:
        obj = get_object(target)
        function = obj.__init__ if inspect.isclass(obj) else obj
        hints = typing.get_type_hints(function)
    except Exception:  # an unimportable target or an unresolvable hint: the constructor will judge
        return None
    return hints.get(name)


def _fits(value: Any, expected: Any) -> bool:
    """Whether ``value`` (a plain YAML value) can be given where ``expected`` is annotated; unknown hints fit."""
    origin = typing.get_origin(expected)
    if expected is Any or isinstance(expected, typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(expected))
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or expected in (list, tuple):
        return isinstance(value, list | tuple) or OmegaConf.is_list(value)
    if origin is dict or expected is dict:
        return isinstance(value, dict) or OmegaConf.is_dict(value)
    if inspect.isclass(expected) and expected.__name__ == "Tensor" and expected.__module__.startswith("torch"):
        # Optimizers annotate numbers as `float | Tensor`: a YAML number is what a config can give.
        return isinstance(value, int | float) and not isinstance(value, bool)
    # Paths, callables, timedelta and the like: a YAML scalar may be converted by the constructor or a resolver.
    return True


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(option) for option in typing.get_args(expected)))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(expected))
    if expected is type(None):
        return "null"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if inspect.isclass(expected) and expected.__name__ == "Tensor":
        return "a number"
    return names.get(expected, getattr(expected, "__name__", str(expected)))
