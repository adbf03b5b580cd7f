"""Synthetic speech and streams for tests and benchmarks (espeak-ng, flite, sox, noise).

Not used on the robot. :func:`speak` runs Debian's ``espeak-ng`` (voices such
as ``en-us``, ``en+f3``) or, for voices named ``flite:<voice>``, CMU
``flite`` (``kal16``, ``slt``, ``awb``, ``rms``: voices built from recordings
of real speakers, which speech recognisers trained on human speech hear far
better than espeak-ng's formant synthesis), and caches the 16 kHz result
under a folder (``build/speech_cache`` by default), so a test suite or a
benchmark synthesizes each (text, voice, speed, pitch) once.
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

from emotion_ros.audio.features import resample
from emotion_ros.audio.pcm import SAMPLE_RATE

RATE = SAMPLE_RATE


class SynthUnavailable(RuntimeError):
    """espeak-ng or sox is not installed."""


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    """Mono ``x`` at ``rate`` Hz to 16 kHz with the project's one resampler."""
    return resample(np.asarray(x, np.float32), rate, RATE)


#: Prefix of voices synthesized by CMU flite instead of espeak-ng.
FLITE_PREFIX = 'flite:'
#: flite speaks at about this many words per minute at ``duration_stretch`` 1.
FLITE_WPM = 170
#: Cents of pitch shift per unit of espeak-ng's 0-99 pitch scale away from 50 (flite voices).
FLITE_CENTS_PER_PITCH = 8


def _read_wav_bytes(wav: bytes) -> Tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), '<i2').astype(np.float32) / 32768.0
    return x, rate


def _espeak(text: str, voice: str, speed: int, pitch: int) -> Tuple[np.ndarray, int]:
    if shutil.which('espeak-ng') is None:
        raise SynthUnavailable('espeak-ng is not installed (apt-get install espeak-ng)')
    wav = subprocess.run(['espeak-ng', '-v', voice, '-s', str(speed), '-p', str(pitch),
                          '--stdout', text], capture_output=True, check=True).stdout
    return _read_wav_bytes(wav)


def _flite(text: str, voice: str, speed: int, pitch: int) -> Tuple[np.ndarray, int]:
    """flite at ``speed`` words/min; ``pitch`` (espeak's 0-99 scale) becomes a sox pitch shift."""
    if shutil.which('flite') is None:
        raise SynthUnavailable('flite is not installed (apt-get install flite)')
    with tempfile.TemporaryDirectory(prefix='emotion_ros_flite_') as tmp:
        out = os.path.join(tmp, 'out.wav')
        subprocess.run(['flite', '-voice', voice, '--setf',
                        f'duration_stretch={FLITE_WPM / speed:.4f}', '-t', text, '-o', out],
                       capture_output=True, check=True)
        with open(out, 'rb') as f:
            x, rate = _read_wav_bytes(f.read())
    cents = (pitch - 50) * FLITE_CENTS_PER_PITCH
    if not cents:
        return x, rate
    return sox(_resample(x, rate), ['pitch', str(cents)]), RATE   # sox() works at 16 kHz


def speak(text: str, voice: str = 'en-us', speed: int = 160, pitch: int = 50,
          cache_dir: Optional[str] = None) -> np.ndarray:
    """``text`` spoken by espeak-ng (or flite for ``flite:<voice>``), float32 16 kHz mono.

    ``speed`` is in words per minute, ``pitch`` on espeak-ng's 0-99 scale (50
    is the voice's own; for flite voices it becomes a pitch shift of
    ``FLITE_CENTS_PER_PITCH`` cents per step). Results are cached on disk.

    Raises:
        SynthUnavailable: when espeak-ng (flite, sox) is not installed.
    """
    cache_dir = cache_dir or os.path.join('build', 'speech_cache')
    key = hashlib.sha1(f'{text}|{voice}|{speed}|{pitch}'.encode()).hexdigest()[:20]
    path = os.path.join(cache_dir, f'{key}.npy')
    if os.path.isfile(path):
        return np.load(path)
    if voice.startswith(FLITE_PREFIX):
        x, rate = _flite(text, voice[len(FLITE_PREFIX):], speed, pitch)
    else:
        x, rate = _espeak(text, voice, speed, pitch)
    x = _resample(x, rate)
    # Trim the synthesizer's leading/trailing silence so that clip bounds are the speech bounds.
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
