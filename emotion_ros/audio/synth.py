"""Synthetic speech and streams for tests and benchmarks (espeak-ng, sox, noise).

Not used on the robot. :func:`speak` runs Debian's ``espeak-ng`` and caches
the 16 kHz result under a folder (``build/speech_cache`` by default), so a
test suite or a benchmark synthesizes each (text, voice, speed, pitch) once.
:func:`build_stream` lays clips out in one continuous stream with silence
between them and returns where each clip landed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
import wave
from typing import List, Optional, Sequence, Tuple

import numpy as np

RATE = 16000


class SynthUnavailable(RuntimeError):
    """espeak-ng or sox is not installed."""


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return x.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly
    g = gcd(RATE, rate)
    return resample_poly(x, RATE // g, rate // g).astype(np.float32)


def speak(text: str, voice: str = 'en-us', speed: int = 160, pitch: int = 50,
          cache_dir: Optional[str] = None) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float32 mono samples at 16 kHz (cached on disk).

    Raises:
        SynthUnavailable: when espeak-ng is not installed.
    """
    cache_dir = cache_dir or os.path.join('build', 'speech_cache')
    key = hashlib.sha1(f'{text}|{voice}|{speed}|{pitch}'.encode()).hexdigest()[:20]
    path = os.path.join(cache_dir, f'{key}.npy')
    if os.path.isfile(path):
        return np.load(path)
    if shutil.which('espeak-ng') is None:
        raise SynthUnavailable('espeak-ng is not installed (apt-get install espeak-ng)')
    wav = subprocess.run(['espeak-ng', '-v', voice, '-s', str(speed), '-p', str(pitch),
                          '--stdout', text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), '<i2').astype(np.float32) / 32768.0
    x = _resample(x, rate)
    # Trim espeak's leading/trailing silence so that clip bounds are the speech bounds.
    loud = np.flatnonzero(np.abs(x) > 0.01)
    if loud.size:
        x = x[max(0, loud[0] - 160):loud[-1] + 160]
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp.npy'
    np.save(tmp, x)
    os.replace(tmp, path)
    return x


def set_rms_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale ``x`` to an RMS level of ``dbfs``."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) or 1e-9
    return (x * (10.0 ** (dbfs / 20.0) / rms)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a clip landed in a stream (seconds) and what it was."""

    start: float
    end: float
    kind: str     # e.g. 'call', 'near', 'calm'
    label: str    # free text (sentence, voice)


def build_stream(items: Sequence[Tuple[np.ndarray, str, str]], gaps: Sequence[float],
                 lead_s: float = 1.0, tail_s: float = 2.0
                 ) -> Tuple[np.ndarray, List[Placement]]:
    """Concatenate clips with ``gaps[i]`` seconds of silence before clip ``i``.

    Args:
        items: ``(samples, kind, label)`` per clip.
        gaps: silence before each clip (same length as ``items``).
    """
    parts = [np.zeros(int(lead_s * RATE), np.float32)]
    pos = parts[0].size
    placements = []
    for (clip, kind, label), gap in zip(items, gaps):
        silence = np.zeros(int(round(gap * RATE)), np.float32)
        parts.append(silence)
        pos += silence.size
        placements.append(Placement(pos / RATE, (pos + clip.size) / RATE, kind, label))
        parts.append(clip.astype(np.float32))
        pos += clip.size
    parts.append(np.zeros(int(tail_s * RATE), np.float32))
    return np.concatenate(parts), placements


def sox(x: np.ndarray, effects: Sequence[str]) -> np.ndarray:
    """Run ``x`` (16 kHz) through sox with ``effects`` (e.g. ``['reverb', '50']``).

    The output is cut to the input length (reverb tails are dropped).

    Raises:
        SynthUnavailable: when sox is not installed.
    """
    if shutil.which('sox') is None:
        raise SynthUnavailable('sox is not installed (apt-get install sox)')
    with tempfile.TemporaryDirectory(prefix='emotion_ros_sox_') as tmp:
        src, dst = os.path.join(tmp, 'in.wav'), os.path.join(tmp, 'out.wav')
        pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype('<i2')
        with wave.open(src, 'wb') as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())
        subprocess.run(['sox', src, dst, *effects], check=True, capture_output=True)
        with wave.open(dst) as w:
            y = np.frombuffer(w.readframes(w.getnframes()), '<i2').astype(np.float32) / 32768.0
            channels = w.getnchannels()
        if channels > 1:
            y = y.reshape(-1, channels).mean(axis=1)
    out = np.zeros_like(x, dtype=np.float32)
    out[:min(x.size, y.size)] = y[:x.size]
    return out
