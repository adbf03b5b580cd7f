"""The one strict loader of trained tensors into a model (bundles, checkpoints, init-from).

Names must match exactly (apart from ``skip_prefixes``) and shapes too; nothing is copied
unless everything fits, so a failed load leaves the model as it was. Values are cast to each
target's device and dtype.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence

import torch

from emotion_ros.errors import ModelLoadError


def load_strict(targets: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                what: str, skip_prefixes: Sequence[str] = ()) -> List[str]:
    """Copy ``state`` into the model tensors ``targets`` (name -> live parameter or buffer).

    Args:
        targets: the model's tensors to fill, by name.
        state: the loaded tensors, by the same names.
        what: what is loaded, for messages (``'checkpoint'``, ``'multimodal weights'``).
        skip_prefixes: names starting with these are neither required nor loaded (they
            keep their fresh values, e.g. a discrete head of another label set).

    Returns:
        The target names left as they were (the skipped ones), sorted.

    Raises:
        ModelLoadError: naming missing, unexpected or mis-shaped tensors.
    """
    skip = tuple(skip_prefixes)
    expected = {n for n in targets if not (skip and n.startswith(skip))}
    given = {n for n in state if not (skip and n.startswith(skip))}
    missing, unexpected = expected - given, given - expected
    if missing or unexpected:
        raise ModelLoadError(f'{what} does not fit the model: missing {sorted(missing)[:5]} '
                             f'({len(missing)} in all), unexpected {sorted(unexpected)[:5]} '
                             f'({len(unexpected)} in all)')
    for name in sorted(expected):
        if tuple(targets[name].shape) != tuple(state[name].shape):
            raise ModelLoadError(f'{what} tensor {name} has shape {tuple(state[name].shape)}, '
                                 f'the model {tuple(targets[name].shape)}')
    with torch.no_grad():
        for name in sorted(expected):
            target = targets[name]
            target.copy_(state[name].to(target.device, target.dtype))
    return sorted(set(targets) - expected)
