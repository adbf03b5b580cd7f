"""What the audio-visual backend gets besides the frame: crops over time, voice, words.

:class:`PersonAVContext` keeps, per track, a short buffer of the person's
recent crops (the temporal tokens), the latest audio window of the
microphone (resampled to 16 kHz by the one preprocessing of the models,
:mod:`emotion_ros.audio.preprocess`, as training reads its clips) and the
latest transcript, and decides whose voice it is (:func:`attribute_voice`):

* **one visible person**: the voice and the words are theirs;
* **several visible persons**: policy ``nearest`` (default) gives them to the
  person with the largest box (nearest the robot, whose voice the robot's
  microphone hears loudest) and to nobody else: one person's frightened voice
  must not make every bystander look frightened; ``all`` gives them to
  everyone (a group reacting together), ``none`` to nobody (vision only);
* **nobody visible**: :meth:`PersonAVContext.audio_only` returns the voice and
  words alone, which the backend scores as an audio-only estimate (a person
  heard under rubble but not seen).

Audio or words older than ``max_age_s`` are not used. Training gives the model
a clip's voice together with its frame; live, the microphone's audio reaching
a frame's stamp can arrive a little after the frame (another topic, another
callback), so the node waits for it, briefly, with :meth:`wait_for_audio`.
Pure Python/numpy: no ROS, no torch.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.audio.preprocess import ModelAudioStream
from emotion_ros.errors import ConfigError
from emotion_ros.llm.multimodal import AVInputs
from emotion_ros.llm.person_view import render_person

VOICE_POLICIES = ('nearest', 'all', 'none')


def attribute_voice(boxes: Sequence[Sequence[float]], policy: str = 'nearest') -> List[bool]:
    """Which of the visible persons the current voice is given to.

    Raises:
        ConfigError: for an unknown policy.
    """
    if policy not in VOICE_POLICIES:
        raise ConfigError(f'voice_attribution: {policy!r} is not one of {list(VOICE_POLICIES)}')
    n = len(boxes)
    if n == 0 or policy == 'none':
        return [False] * n
    if n == 1 or policy == 'all':
        return [True] * n
    areas = [max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) for b in boxes]
    nearest = int(np.argmax(areas))
    return [i == nearest for i in range(n)]


class PersonAVContext:
    """Per-track crop buffers plus the latest audio window and transcript.

    Args:
        frames: crops kept per track (the clip length of the temporal tokens).
        crop_px: crops are shrunk to at most this side (bounded memory).
        audio_window_s: seconds of audio given to a person (the latest window).
        max_age_s: audio, words and crops older than this are not used.
        policy: voice attribution policy (see :func:`attribute_voice`).
    """

    def __init__(self, frames: int = 8, crop_px: int = 112, audio_window_s: float = 4.0,
                 max_age_s: float = 3.0, policy: str = 'nearest') -> None:
        """Check the settings."""
        if policy not in VOICE_POLICIES:
            raise ConfigError(f'voice_attribution: {policy!r} is not one of '
                              f'{list(VOICE_POLICIES)}')
        if frames < 1 or crop_px < 8 or audio_window_s <= 0 or max_age_s <= 0:
            raise ConfigError('audio-visual context: frames >= 1, crop_px >= 8, '
                              'audio_window_s > 0 and max_age_s > 0 are required')
        self.frames = frames
        self.crop_px = crop_px
        self.audio_window_s = audio_window_s
        self.max_age_s = max_age_s
        self.policy = policy
        self._crops: Dict[int, Deque[Tuple[float, np.ndarray]]] = {}
        self._audio = np.zeros(0, np.float32)
        self._audio_end = -1e18
        self._stream = ModelAudioStream()  # the microphone's rate -> 16 kHz, chunk-independent
        self._transcript: Tuple[float, str] = (-1e18, '')
        self._heard_at = -1e18  # time.monotonic() of the latest feed_audio
        # Audio arrives on another thread than the frames: a short lock of its own, never
        # the pipeline's (held during inference); the condition wakes wait_for_audio.
        self._lock = threading.Lock()
        self._audio_arrived = threading.Condition(self._lock)

    # -- inputs ---------------------------------------------------------------------------

    def feed_audio(self, samples: np.ndarray, end_stamp: float,
                   rate: int = SAMPLE_RATE) -> None:
        """Append mono float samples at ``rate`` Hz ending at ``end_stamp`` (seconds).

        They are resampled to 16 kHz as a stream (:class:`ModelAudioStream`):
        the window the backend gets is, sample for sample, what training's
        reader makes of the same audio, however the microphone chunks it.

        Raises:
            InputError: for samples that are not finite numbers or a rate out of range.
        """
        keep = int(self.audio_window_s * SAMPLE_RATE)
        with self._lock:
            if end_stamp - self._audio_end > self.audio_window_s:
                self._audio = np.zeros(0, np.float32)  # a gap: do not splice old audio on
                self._stream.reset()
            x = self._stream.push(samples, rate)
            self._audio = np.concatenate([self._audio, x])[-keep:]
            self._audio_end = float(end_stamp)
            self._heard_at = time.monotonic()
            self._audio_arrived.notify_all()

    def audio_live(self) -> bool:
        """True when audio was fed within ``max_age_s`` of wall time (a live microphone)."""
        with self._lock:
            return time.monotonic() - self._heard_at <= self.max_age_s

    def wait_for_audio(self, stamp: float, timeout_s: float) -> bool:
        """Wait until the audio heard reaches ``stamp`` (a frame's), at most ``timeout_s``.

        Only while a microphone is live (audio fed within ``max_age_s`` of wall
        time): with none, it returns at once. True when the audio reaches the
        stamp (within 1 ms), False otherwise.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._audio_arrived:
            while self._audio_end < stamp - 1e-3:
                now = time.monotonic()
                if now >= deadline or now - self._heard_at > self.max_age_s:
                    return False
                self._audio_arrived.wait(deadline - now)
            return True

    def feed_transcript(self, text: str, stamp: float) -> None:
        """Set the latest transcript (what was said, ending at ``stamp``)."""
        with self._lock:
            self._transcript = (float(stamp), ' '.join(str(text).split()))

    def add_frame(self, rgb: np.ndarray, tracks: Sequence[Tuple[int, Sequence[float]]],
                  stamp: float) -> None:
        """Buffer each track's crop of this frame; forget tracks unseen for ``max_age_s``."""
        for track_id, box in tracks:
            crop = render_person(rgb, box, 'crop', margin=0.1, square=False)
            step = max(1, int(np.ceil(max(crop.shape[:2]) / self.crop_px)))
            buffer = self._crops.setdefault(int(track_id),
                                            collections.deque(maxlen=self.frames))
            buffer.append((float(stamp), np.ascontiguousarray(crop[::step, ::step])))
        for track_id in [t for t, b in self._crops.items() if stamp - b[-1][0] > self.max_age_s]:
            del self._crops[track_id]

    # -- what the backend gets ----------------------------------------------------------------

    def _voice(self, stamp: float) -> Tuple[Optional[np.ndarray], Optional[str]]:
        with self._lock:
            audio = self._audio if (self._audio.size and
                                    stamp - self._audio_end <= self.max_age_s) else None
            t, text = self._transcript
        words = text if text and stamp - t <= self.max_age_s else None
        return audio, words

    def inputs_for(self, tracks: Sequence[Tuple[int, Sequence[float]]],
                   stamp: float) -> List[AVInputs]:
        """Per track (in order): its recent crops, and the voice/words if attributed to it."""
        audio, words = self._voice(stamp)
        voice = attribute_voice([box for _, box in tracks], self.policy)
        out = []
        for (track_id, _box), heard in zip(tracks, voice):
            crops = [c for t, c in self._crops.get(int(track_id), ())
                     if stamp - t <= self.max_age_s]
            out.append(AVInputs(frames=crops if len(crops) >= 2 else None,
                                audio=audio if heard else None,
                                transcript=words if heard else None))
        return out

    def audio_only(self, stamp: float) -> Optional[AVInputs]:
        """The voice and words alone (nobody visible), or None when there is neither."""
        audio, words = self._voice(stamp)
        if audio is None and words is None:
            return None
        return AVInputs(audio=audio, transcript=words)

    def reset(self) -> None:
        """Forget everything (cleanup)."""
        self._crops.clear()
        with self._lock:
            self._audio = np.zeros(0, np.float32)
            self._audio_end = -1e18
            self._stream.reset()
            self._heard_at = -1e18
            self._transcript = (-1e18, '')
