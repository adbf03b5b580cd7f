"""Decoding clips into frames and 16 kHz mono audio (OpenCV, WAV, ffmpeg).

* Frames: OpenCV's ``VideoCapture`` (its wheels bundle FFmpeg: mp4, avi, flv,
  mkv), or a folder of frame images (DFEW's ``clip_224x224`` layout).
* Audio: WAV files are read and resampled to 16 kHz by the models' one audio
  preprocessing (:mod:`emotion_ros.audio.preprocess`, the robot's too); audio
  inside a video container is decoded by the ``ffmpeg`` program
  (``apt-get install ffmpeg``) into mono PCM at the container's own rate and
  then resampled by the same preprocessing.

Errors name the file and what failed; nothing is silently replaced by zeros.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import List, Optional

import numpy as np

from emotion_ros.audio.preprocess import read_model_audio, to_model_rate
from emotion_ros.errors import InputError
from training.core.images import load_image_rgb

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.flv', '.mkv', '.mov', '.webm')


def read_wav(path: str) -> np.ndarray:
    """A WAV file as the models' audio input: mono float32 in [-1, 1] at 16 kHz.

    The one WAV reader and the one preprocessing of the robot
    (:func:`emotion_ros.audio.preprocess.read_model_audio`): training hears a
    clip as the robot's microphone path delivers it to the audio encoder.

    Raises:
        InputError: naming the file, for a missing, unreadable or unsupported file.
    """
    return read_model_audio(path)


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
    # ffmpeg mixes down to mono but keeps the rate: resampling is the contract's, not ffmpeg's.
    rate = _ffmpeg_audio_rate(path)
    cmd = [ffmpeg, '-nostdin', '-v', 'error', '-i', path, '-vn', '-f', 's16le', '-ac', '1',
           '-ar', str(rate), '-']
    result = subprocess.run(cmd, capture_output=True, check=False, timeout=300)
    if result.returncode != 0:
        raise InputError(f'{path}: ffmpeg could not decode audio: '
                         f'{result.stderr.decode(errors="replace").strip()[:300]}', 'audio')
    if not result.stdout:
        raise InputError(f'{path}: has no audio stream', 'audio')
    return to_model_rate(np.frombuffer(result.stdout, '<i2').astype(np.float32) / 32768.0, rate)


def _ffmpeg_audio_rate(path: str) -> int:
    """The sample rate of the first audio stream of a container (ffprobe), 48 kHz if unknown.

    (Unknown only without ffprobe or without an audio stream, which ffmpeg then reports.)
    """
    ffprobe = shutil.which('ffprobe')
    if ffprobe is None:
        return 48000
    result = subprocess.run([ffprobe, '-v', 'error', '-select_streams', 'a:0', '-show_entries',
                             'stream=sample_rate', '-of', 'csv=p=0', path],
                            capture_output=True, check=False, timeout=60)
    try:
        return int(result.stdout.decode().strip().splitlines()[0])
    except (ValueError, IndexError):
        return 48000


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
