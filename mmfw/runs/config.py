"""Checks of command-line values against the constructors they are for, before anything is built.

A value of the wrong type (``trainer.max_epochs=abc``) otherwise reaches the constructor and fails deep inside it
(Lightning: a bare ``AssertionError``), or is accepted and misbehaves later. Like torchtune's config validation, the
constructor's signature is the schema: the override's value is checked against the annotation of the parameter it
sets, and the error names the override and the expected type.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf


class ConfigValueError(ValueError):
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
