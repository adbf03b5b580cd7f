"""The one audio preprocessing of the models: mono, 16 kHz, one band-limited resampler.

Training (``training.core.media``), the robot (``perception.av_context``,
fed by ``perception_node`` and ``OfflinePipeline``) and the evaluation all
turn audio into the audio encoder's input with this module, so a model hears
on the robot what it heard in training:

* channels are averaged to mono;
* any rate becomes :data:`~emotion_ros.audio.pcm.SAMPLE_RATE` (16 kHz) with
  :class:`~emotion_ros.audio.features.StreamResampler`, a Kaiser-windowed
  sinc polyphase filter that cuts below the new Nyquist frequency (a 48 kHz
  microphone's energy above 8 kHz is removed, not folded down as aliases);
* the result does not depend on how the audio was chunked: a clip read from
  a file in one piece (training) and the same clip arriving as microphone
  messages (the robot) give bit-identical samples. A whole clip is resampled
  as a stream delivers it at the clip's last sample (:func:`to_model_rate`):
  the last few outputs the filter still holds back (under 1 ms) are not made
  up from zeros.

:data:`AUDIO_PREPROCESSING` describes this and is part of the hashed model
contract (:func:`emotion_ros.llm.spec.contract_spec`): a bundle trained with
another preprocessing is refused by name. No scipy, no torch.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import numpy as np

from emotion_ros.audio.features import (RESAMPLER_CUTOFF, RESAMPLER_KAISER_BETA,
                                        RESAMPLER_ZERO_CROSSINGS, StreamResampler)
from emotion_ros.audio.pcm import check_rate_channels, read_wav, SAMPLE_RATE
from emotion_ros.errors import InputError

#: What the models' audio input is (recorded in, and hashed into, every audio model's contract).
AUDIO_PREPROCESSING: Dict[str, Any] = {
    'sample_rate': SAMPLE_RATE,
    'channels': 'mean of the channels',
    'resampler': {
        'method': 'kaiser-windowed sinc polyphase, streamed (chunking-independent)',
        'zero_crossings': RESAMPLER_ZERO_CROSSINGS,
        'kaiser_beta': RESAMPLER_KAISER_BETA,
        'cutoff_of_nyquist': RESAMPLER_CUTOFF,
        'clip_end': 'outputs the filter still holds back at the last sample are dropped',
    },
}


class ModelAudioStream:
    """Audio chunks at any rate in, model-rate (16 kHz) mono samples out.

    The output does not depend on the chunking. A change of the input rate,
    or :meth:`reset` (a gap in the stream), starts a new stream.
    """

    def __init__(self) -> None:
        """An empty stream."""
        self._resampler: Optional[StreamResampler] = None

    def reset(self) -> None:
        """Forget the stream (the next chunk starts a new one)."""
        self._resampler = None

    def push(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """Feed mono float samples at ``rate`` Hz; return the 16 kHz samples now complete.

        Raises:
            InputError: for a rate outside the supported range (kind
                ``'audio_rate'``) or samples that are not finite (``'audio_nonfinite'``).
        """
        check_rate_channels(rate, 1)
        x = np.asarray(samples, np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise InputError('audio samples hold NaN or infinite values', 'audio_nonfinite')
        if self._resampler is None or self._resampler.in_rate != int(rate):
            self._resampler = StreamResampler(int(rate), SAMPLE_RATE)
        return self._resampler.process(x)

    def pending_s(self) -> float:
        """Seconds of input whose output is still held back (the end of the output lags
        the end of the input by this)."""
        return self._resampler.pending_s() if self._resampler is not None else 0.0


def to_model_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """A whole mono clip at ``rate`` Hz as :class:`ModelAudioStream` delivers it (16 kHz).

    Raises:
        InputError: as :meth:`ModelAudioStream.push`.
    """
    return ModelAudioStream().push(samples, rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """``(n,)`` or ``(n, channels)`` samples as mono float32 (the mean of the channels)."""
    x = np.asarray(samples, np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float64).astype(np.float32) if x.shape[1] > 1 else x[:, 0]
    return x.reshape(-1)


def read_model_audio(path: Union[str, os.PathLike]) -> np.ndarray:
    """A WAV file as the models' audio input: mono float32 at 16 kHz.

    Raises:
        InputError: as :func:`emotion_ros.audio.pcm.read_wav`.
    """
    samples, rate = read_wav(path)
    return to_model_rate(to_mono(samples), rate)
