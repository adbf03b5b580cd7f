"""Decoding clips into frames and 16 kHz mono audio (OpenCV, WAV, ffmpeg).

* Frames: OpenCV's ``VideoCapture`` (its wheels bundle FFmpeg: mp4, avi, flv,
  mkv), or a folder of frame images (DFEW's ``clip_224x224`` layout).
* Audio: WAV files are read with Python's ``wave`` module and resampled to
  16 kHz; audio inside a video container is decoded by the ``ffmpeg`` program
  (``apt-get install ffmpeg``), which is asked for 16 kHz mono directly.

Errors name the file and what failed; nothing is silently replaced by zeros.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import wave
from typing import List, Optional

import numpy as np

from emotion_ros.errors import InputError
from emotion_ros.llm.multimodal import AUDIO_SAMPLE_RATE
from training.core.images import load_image_rgb

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.flv', '.mkv', '.mov', '.webm')


def resample(audio: np.ndarray, rate: int, target: int = AUDIO_SAMPLE_RATE) -> np.ndarray:
    """Resample mono audio to ``target`` Hz (polyphase when scipy is there, else linear)."""
    if rate == target or audio.size == 0:
        return audio.astype(np.float32)
    try:
        from math import gcd
        from scipy.signal import resample_poly
        g = gcd(rate, target)
        return resample_poly(audio, target // g, rate // g).astype(np.float32)
    except ImportError:
        n = int(round(audio.size * target / rate))
        x = np.linspace(0, audio.size - 1, n)
        return np.interp(x, np.arange(audio.size), audio).astype(np.float32)


def read_wav(path: str) -> np.ndarray:
    """A PCM WAV file as mono float32 in [-1, 1] at 16 kHz.

    Raises:
        InputError: for a missing, unreadable or non-PCM file.
    """
    try:
        with wave.open(path, 'rb') as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise InputError(f'{path}: cannot read WAV audio: {exc}', 'audio') from exc
    if width == 2:
        data = np.frombuffer(raw, '<i2').astype(np.float32) / 32768.0
    elif width == 4:
        data = np.frombuffer(raw, '<i4').astype(np.float32) / 2147483648.0
    elif width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise InputError(f'{path}: {8 * width}-bit WAV is not supported (8, 16, 32-bit PCM)',
                         'audio')
    if channels > 1:
        data = data[:data.size // channels * channels].reshape(-1, channels).mean(1)
    return resample(data, rate)


def read_audio(path: str) -> np.ndarray:
    """Audio of a WAV file or of a video container, as 16 kHz mono float32.

    Raises:
        InputError: when the file is missing, has no audio stream, or ffmpeg
            is needed and not installed (named).
    """
    if not os.path.isfile(path):
        raise InputError(f'{path}: audio file does not exist', 'audio')
    if path.lower().endswith('.wav'):
        return read_wav(path)
    ffmpeg = shutil.which('ffmpeg')
    if ffmpeg is None:
        raise InputError(f'{path}: decoding audio from a video needs the ffmpeg program '
                         '(apt-get install ffmpeg), or give a WAV file', 'audio')
    cmd = [ffmpeg, '-nostdin', '-v', 'error', '-i', path, '-vn', '-f', 's16le', '-ac', '1',
           '-ar', str(AUDIO_SAMPLE_RATE), '-']
    result = subprocess.run(cmd, capture_output=True, check=False, timeout=300)
    if result.returncode != 0:
        raise InputError(f'{path}: ffmpeg could not decode audio: '
                         f'{result.stderr.decode(errors="replace").strip()[:300]}', 'audio')
    if not result.stdout:
        raise InputError(f'{path}: has no audio stream', 'audio')
    return np.frombuffer(result.stdout, '<i2').astype(np.float32) / 32768.0


def read_frames(path: str, max_frames: int = 8) -> List[np.ndarray]:
    """Up to ``max_frames`` evenly spaced RGB uint8 frames of a video file or frame folder.

    Raises:
        InputError: for a missing or undecodable clip (named).
    """
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise InputError(f'{path}: frame folder holds no images', 'video')
        pick = np.unique(np.linspace(0, len(names) - 1, min(max_frames, len(names)))
                         .round().astype(int))
        return [load_image_rgb(os.path.join(path, names[i])) for i in pick]
    import cv2
    if not os.path.isfile(path):
        raise InputError(f'{path}: video file does not exist', 'video')
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise InputError(f'{path}: OpenCV cannot open this video', 'video')
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise InputError(f'{path}: no decodable video frames', 'video')
    pick = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames)))
                     .round().astype(int))
    return [np.ascontiguousarray(frames[i][:, :, ::-1]) for i in pick]


def middle_frame(frames: List[np.ndarray]) -> Optional[np.ndarray]:
    """The frame shown as the person view of a clip (the middle one)."""
    return frames[len(frames) // 2] if frames else None
