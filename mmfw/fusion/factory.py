"""How the module builds a fusion from its Hydra partial: ``in_dims`` always, ``num_outputs`` for a fusion that is its
own head (``outputs_logits = True``, late fusion), both from the run's data, never typed in config."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def build_fusion(factory: Callable[..., nn.Module], *, in_dims: dict[str, int], num_outputs: int) -> nn.Module:
    """``factory(in_dims=..., [num_outputs=...])``; a ``num_outputs`` the partial already fixes must match the task."""
    cls = getattr(factory, "func", factory)  # the class behind a functools.partial
    if not getattr(cls, "outputs_logits", False):
        return factory(in_dims=in_dims)
    fixed = getattr(factory, "keywords", {}).get("num_outputs")
    if fixed is not None and fixed != num_outputs:
        raise ValueError(
            f"fusion.num_outputs={fixed} but the task has {num_outputs} outputs: remove fusion.num_outputs (the "
            "module passes the task's logit width)"
        )
    return factory(in_dims=in_dims, num_outputs=num_outputs)
