"""Voice activity detection on 32 ms frames of 16 kHz audio.

Two interchangeable detectors, chosen by ``AudioCueConfig.vad_backend``:

- ``silero``: Silero VAD (MIT; the PyPI package ``silero-vad`` ships the
  TorchScript weights, no download). A small recurrent network: its state
  carries over from frame to frame, so frames must be fed in stream order.
- ``energy``: a dependency-free detector (level above an adaptive noise
  floor, speech-band share and spectral flatness) for robots without torch.

Both take frames of exactly :data:`VAD_FRAME` samples and return one speech
probability per frame; neither depends on how a stream was chunked.
"""

from __future__ import annotations

import abc
import importlib.util
import math
import os
import warnings
from typing import Any, Optional

import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.errors import ConfigError, ModelLoadError

#: Samples per VAD frame at 16 kHz (what Silero VAD expects at that rate).
VAD_FRAME = 512
VAD_RATE = SAMPLE_RATE
VAD_BACKENDS = ('silero', 'energy')


class VoiceActivityDetector(abc.ABC):
    """Speech probability per 32 ms frame of a 16 kHz stream."""

    name = ''

    def load(self) -> None:
        """Load the model (if any). Raises ModelLoadError naming what is missing."""

    @abc.abstractmethod
    def process(self, frames: np.ndarray) -> np.ndarray:
        """Return the speech probability of each frame of ``(count, VAD_FRAME)`` float32."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the stream (a new stream starts with the next frame)."""

    def close(self) -> None:
        """Free the model. Safe to call twice."""


def silero_weights_path() -> str:
    """Path of the TorchScript Silero VAD weights shipped by the ``silero-vad`` package.

    The package is located without being imported: importing it calls
    ``torch.set_num_threads(1)``, which would change the whole process.

    Raises:
        ModelLoadError: if the package or its weights file is missing.
    """
    spec = importlib.util.find_spec('silero_vad')
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError('voice activity: the silero-vad package is not installed '
                             '(pip install silero-vad) - or set vad_backend: energy')
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, 'data', 'silero_vad.jit')
        if os.path.isfile(path):
            return path
    raise ModelLoadError(f'voice activity: silero_vad.jit not found in '
                         f'{list(spec.submodule_search_locations)}')


class SileroVad(VoiceActivityDetector):
    """Silero VAD v5/v6 (TorchScript) run frame by frame on the CPU."""

    name = 'silero'

    def __init__(self, weights: Optional[str] = None) -> None:
        """Use the given TorchScript file, or the one the silero-vad package ships."""
        self._weights = weights
        self._model: Any = None
        self._torch: Any = None

    def load(self) -> None:
        """Load the TorchScript model.

        Raises:
            ModelLoadError: if torch, the package or the weights are missing or
                the file is not a Silero VAD model.
        """
        try:
            import torch
        except ImportError as exc:
            raise ModelLoadError('voice activity: the silero backend needs torch; '
                                 'install it or set vad_backend: energy') from exc
        path = self._weights or silero_weights_path()
        if not os.path.isfile(path):
            raise ModelLoadError(f'voice activity: Silero weights {path!r} do not exist')
        try:
            with warnings.catch_warnings():
                # torch marks jit.load deprecated; the shipped weights are TorchScript.
                warnings.simplefilter('ignore', FutureWarning)
                model = torch.jit.load(path, map_location='cpu')
            model.eval()
            model.reset_states()
            with torch.inference_mode(), torch.jit.optimized_execution(False):
                probe = model(torch.zeros(VAD_FRAME), VAD_RATE)
            if tuple(probe.shape) not in ((1, 1), (1,)):
                raise ModelLoadError(f'voice activity: {path!r} returned shape '
                                     f'{tuple(probe.shape)}, not a speech probability')
            model.reset_states()
        except ModelLoadError:
            raise
        except Exception as exc:  # torch raises RuntimeError/ValueError for bad archives
            raise ModelLoadError(f'voice activity: cannot load Silero VAD from {path!r}: '
                                 f'{exc}') from exc
        self._torch = torch
        self._model = model

    def process(self, frames: np.ndarray) -> np.ndarray:
        """Return one speech probability per frame, in stream order."""
        if self._model is None:
            raise ModelLoadError('voice activity: SileroVad.process() called before load()')
        frames = np.asarray(frames, dtype=np.float32).reshape(-1, VAD_FRAME)
        out = np.empty(frames.shape[0], dtype=np.float32)
        torch = self._torch
        # TorchScript's profiling executor re-specializes the graph whenever the
        # recurrent state is reset, costing 10-40 ms per frame for hundreds of
        # frames; the plain interpreter runs every frame in ~0.25 ms. The ops are
        # too small to gain from intra-op threads, and on a busy 2-core robot the
        # thread hand-offs made a frame 20-40x slower, so run on one thread (a
        # per-thread setting with torch's OpenMP backend; restored afterwards).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode(), torch.jit.optimized_execution(False):
                for i, frame in enumerate(frames):
                    out[i] = float(self._model(torch.from_numpy(np.ascontiguousarray(frame)),
                                               VAD_RATE))
        finally:
            torch.set_num_threads(threads)
        return out

    def reset(self) -> None:
        """Reset the recurrent state."""
        if self._model is not None:
            self._model.reset_states()

    def close(self) -> None:
        """Drop the model."""
        self._model = None


class EnergyVad(VoiceActivityDetector):
    """Speech probability from level over the noise floor, speech-band share and flatness.

    ``p = sigmoid((snr_db - 9) / 2.5) * band * tonal`` where the noise floor
    follows the quietest frames (starts at or below -50 dBFS, drops at once,
    rises 3 dB per second),
    ``band`` is how much of the energy lies in 250-4000 Hz (a logistic
    around 50 %) and ``tonal`` falls off as the spectrum approaches white
    noise (flatness over 0.35). Frames under -65 dBFS are never speech.
    """

    name = 'energy'
    _FLOOR_RISE_DB = 3.0 * VAD_FRAME / VAD_RATE  # dB per frame
    _ABSOLUTE_MIN_DBFS = -65.0

    def __init__(self) -> None:
        """Start with no noise floor estimate."""
        freqs = np.fft.rfftfreq(VAD_FRAME, 1.0 / VAD_RATE)
        self._speech_band = (freqs >= 250.0) & (freqs <= 4000.0)
        self._flat_band = (freqs >= 100.0) & (freqs <= 7000.0)
        self._hann = np.hanning(VAD_FRAME)
        self.reset()

    def reset(self) -> None:
        """Forget the noise floor."""
        self._floor: Optional[float] = None

    def process(self, frames: np.ndarray) -> np.ndarray:
        """Return one speech probability per frame, in stream order."""
        x = np.asarray(frames, dtype=np.float64).reshape(-1, VAD_FRAME)
        power = np.mean(x * x, axis=1)
        with np.errstate(divide='ignore'):
            level = np.maximum(-120.0, 10.0 * np.log10(power))
        spec = np.abs(np.fft.rfft(x * self._hann, axis=1)) ** 2 + 1e-20
        band = spec[:, self._speech_band].sum(axis=1) / spec.sum(axis=1)
        flat_spec = spec[:, self._flat_band]
        flatness = np.exp(np.mean(np.log(flat_spec), axis=1)) / np.mean(flat_spec, axis=1)
        out = np.empty(x.shape[0], dtype=np.float32)
        for i in range(x.shape[0]):
            # The floor tracks quiet frames; it is updated after scoring, so a
            # long loud sound is not absorbed into the floor within the frame.
            # A stream may start with speech: never assume a floor above -50 dBFS.
            floor = min(level[i], -50.0) if self._floor is None else self._floor
            snr = level[i] - floor
            p = _sigmoid((snr - 9.0) / 2.5) * _sigmoid((band[i] - 0.5) / 0.08)
            p *= 1.0 - _sigmoid((flatness[i] - 0.35) / 0.05)
            if level[i] < self._ABSOLUTE_MIN_DBFS:
                p = 0.0
            out[i] = p
            self._floor = min(level[i], floor + self._FLOOR_RISE_DB)
        return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, float(x)))))


def create_vad(backend: str) -> VoiceActivityDetector:
    """Build (not load) the detector named ``backend`` (one of :data:`VAD_BACKENDS`).

    Raises:
        ConfigError: for an unknown name.
    """
    if backend == 'silero':
        return SileroVad()
    if backend == 'energy':
        return EnergyVad()
    raise ConfigError(f'vad_backend: unknown backend {backend!r}; known: {list(VAD_BACKENDS)}')
