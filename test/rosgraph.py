"""Helpers for tests that talk to node processes through real topics."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import List

import numpy as np

from conftest import CONFIG

PARAMS = ['--ros-args', '--params-file', str(CONFIG)]


def params(*overrides: str) -> List[str]:
    """``--ros-args --params-file config/robot.yaml -p k:=v ...``."""
    out = list(PARAMS)
    for item in overrides:
        out += ['-p', item]
    return out


def sample_frame(name: str = 'zidane', size=(640, 480)) -> np.ndarray:
    """A real photo of people (shipped by an installed package) as RGB at ``size``."""
    import cv2

    from emotion_ros.sample_media import sample_images
    bgr = cv2.imread(str(sample_images()[name]))
    return np.ascontiguousarray(cv2.resize(bgr, size)[:, :, ::-1])


def espeak_wav(path: Path, text: str, rate_hz: int = 16000, silence_s: float = 1.0) -> Path:
    """Synthesise ``text`` to a 16 kHz WAV with espeak-ng (installed by make setup), followed
    by ``silence_s`` of silence so the last analysis windows complete."""
    import pytest
    if shutil.which('espeak-ng') is None:
        pytest.skip('espeak-ng is not installed (tools/setup_env.sh installs it)')
    raw = path.with_suffix('.raw.wav')
    subprocess.run(['espeak-ng', '-s', '140', '-w', str(raw), text], check=True)
    from emotion_ros.audio.pcm import read_wav, write_wav
    samples, rate = read_wav(raw)
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != rate_hz:
        from scipy.signal import resample_poly
        mono = resample_poly(mono, rate_hz, rate).astype(np.float32)
    mono = np.concatenate([mono, np.zeros(int(silence_s * rate_hz), np.float32)])
    write_wav(path, mono, rate_hz)
    return path


def publish_audio(node_spin, pub, audio, t0, frame_id='mic_test', speed=2.0, rate=16000):
    """Publish ``audio`` as 100 ms AudioFrames stamped from ``t0``, at ``speed`` x real time.

    Paced like a microphone (a little faster): a burst of hundreds of frames would overrun
    the reliable keep-last queues on a loaded machine, and lost frames are not what the
    tests are about.
    """
    from emotion_ros.ros import conversions

    chunk = rate // 10
    start = time.monotonic()
    for n, i in enumerate(range(0, audio.size, chunk)):
        header = conversions.make_header(t0 + i / rate, frame_id)
        pub.publish(conversions.samples_to_audio_frame(audio[i:i + chunk], rate, 'S16LE',
                                                       header))
        due = start + (n + 1) * chunk / rate / speed
        node_spin(0.005)
        while time.monotonic() < due:
            node_spin(max(0.001, min(0.02, due - time.monotonic())))


def latest_status(arrays, name: str = 'emotion_ros: audio_node'):
    """Key/values and the status itself of the newest DiagnosticStatus called ``name`` in the
    received DiagnosticArrays (``({}, None)`` before one arrived)."""
    for array in reversed(arrays):
        for status in array.status:
            if status.name == name:
                return {kv.key: kv.value for kv in status.values}, status
    return {}, None
