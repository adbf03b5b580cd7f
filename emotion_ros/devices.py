"""The one device resolver of every model (YOLO, the LLaVA and audio-visual backends).

``resolve_device(requested, option)`` maps a ``device`` option onto the torch device:

* ``'cpu'`` -> ``'cpu'`` (torch is not imported);
* ``'auto'`` -> ``'cuda:0'`` when torch sees a usable GPU, else ``'cpu'``;
* ``'cuda'`` or ``'cuda:N'`` -> ``'cuda:N'`` (``N`` = 0 for ``'cuda'``).

A value that is none of these is a configuration mistake (:class:`ConfigError`,
naming the option and the choices). ``'cuda'`` on a machine without a usable
GPU (or ``cuda:N`` past the GPU count) is a valid configuration this machine
cannot load the model with: :class:`ModelLoadError`, naming the option, so the
node reports it as a failed model load with the reason.
"""

from __future__ import annotations

import re

from emotion_ros.errors import ConfigError, ModelLoadError

#: The values ``device`` options accept (``cuda:N`` too, for a machine with several GPUs).
DEVICE_CHOICES = ('auto', 'cpu', 'cuda')
_CUDA = re.compile(r'^cuda(?::(\d+))?$')


def resolve_device(requested: str, option: str = 'device') -> str:
    """The torch device for a ``device`` option (see the module doc).

    Raises:
        ConfigError: for a value other than auto, cpu, cuda or cuda:N.
        ModelLoadError: when a GPU is asked for and torch cannot use it.
    """
    value = str(requested).strip().lower()
    match = _CUDA.match(value)
    if value not in ('auto', 'cpu') and match is None:
        raise ConfigError(f'{option}: {requested!r} is not one of {list(DEVICE_CHOICES)} '
                          'or cuda:N')
    if value == 'cpu':
        return 'cpu'
    import torch
    available = torch.cuda.is_available()
    if value == 'auto':
        return 'cuda:0' if available else 'cpu'
    index = int(match.group(1) or 0)
    if not available:
        raise ModelLoadError(f"{option} is '{requested}' but torch.cuda.is_available() is False "
                             '(no GPU, or a CPU-only torch build)')
    if index >= torch.cuda.device_count():
        raise ModelLoadError(f"{option} is '{requested}' but torch sees only "
                             f'{torch.cuda.device_count()} GPU(s)')
    return f'cuda:{index}'
