"""Conversions between ROS messages and the pipeline's plain types (the only place that does)."""

from __future__ import annotations

import math
import numpy as np
from builtin_interfaces.msg import Time
from emotion_ros_msgs.msg import (AudioCues, AudioFrame, DistressAlert, PersonEmotion,
                                  PersonEmotionArray)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from emotion_ros.audio.pcm import decode_pcm, encode_pcm
from emotion_ros.contract import CATEGORIES, NUM_CATEGORIES
from emotion_ros.errors import InputError
from emotion_ros.image_codec import decode_compressed, decode_image, encode_image
from emotion_ros.types import (Alert, AudioCueResult, EmotionOutput, FrameResult,
                               PersonEstimate)


def stamp_to_sec(stamp: Time) -> float:
    """ROS time -> seconds as float."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    """Seconds -> ROS time (non-negative; NaN becomes 0)."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    sec = int(math.floor(seconds))
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def make_header(seconds: float, frame_id: str = '') -> Header:
    """A header with the given stamp and frame."""
    return Header(stamp=sec_to_stamp(seconds), frame_id=frame_id)


# ------------------------------------------------------------------- images
def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 array (InputError on bad encoding/size)."""
    return decode_image(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                        is_bigendian=bool(msg.is_bigendian))


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage -> RGB uint8 array (InputError on corrupt data)."""
    return decode_compressed(msg.format, msg.data)


def rgb_to_image(rgb: np.ndarray, header: Header, encoding: str = 'rgb8') -> Image:
    """RGB uint8 array -> sensor_msgs/Image."""
    height, width, step, data = encode_image(rgb, encoding)
    return Image(header=header, height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=step, data=data)


# ------------------------------------------------------------------ persons
def person_to_msg(person: PersonEstimate, header: Header) -> PersonEmotion:
    """PersonEstimate -> PersonEmotion."""
    emotion = person.emotion
    msg = PersonEmotion()
    msg.header = header
    msg.track_id = int(person.track_id)
    msg.x_min, msg.y_min, msg.x_max, msg.y_max = (float(v) for v in person.box)
    msg.detection_confidence = float(person.detection_confidence)
    msg.category_names = list(CATEGORIES)
    msg.category_scores = [float(v) for v in emotion.scores]
    msg.valence, msg.arousal, msg.dominance = (float(v) for v in emotion.vad)
    msg.face_visible = bool(emotion.face_visible)
    msg.explanation = emotion.explanation
    msg.model_id = person.model_id
    if person.crop_jpeg:
        msg.crop = CompressedImage(header=header, format='jpeg', data=person.crop_jpeg)
    return msg


def frame_to_msg(result: FrameResult, processing_ms: float) -> PersonEmotionArray:
    """FrameResult -> PersonEmotionArray."""
    header = make_header(result.stamp, result.frame_id)
    return PersonEmotionArray(header=header, image_width=result.width,
                              image_height=result.height,
                              persons=[person_to_msg(p, header) for p in result.persons],
                              processing_ms=float(processing_ms))


def msg_to_person(msg: PersonEmotion) -> PersonEstimate:
    """PersonEmotion -> PersonEstimate (categories matched by name, so order is free).

    Raises:
        InputError: when names and scores differ in length.
    """
    names, scores = list(msg.category_names), list(msg.category_scores)
    if len(names) != len(scores):
        raise InputError(f'PersonEmotion track {msg.track_id}: {len(names)} category names '
                         f'but {len(scores)} scores', kind='person_msg')
    vector = np.zeros(NUM_CATEGORIES, np.float32)
    index = {name: i for i, name in enumerate(CATEGORIES)}
    for name, score in zip(names, scores):
        if name in index and math.isfinite(score):
            vector[index[name]] = min(max(score, 0.0), 1.0)
    emotion = EmotionOutput(scores=vector, vad=(msg.valence, msg.arousal, msg.dominance),
                            face_visible=msg.face_visible, explanation=msg.explanation)
    return PersonEstimate(track_id=msg.track_id,
                          box=(msg.x_min, msg.y_min, msg.x_max, msg.y_max),
                          detection_confidence=msg.detection_confidence, emotion=emotion,
                          model_id=msg.model_id, crop_jpeg=bytes(msg.crop.data))


def msg_to_frame(msg: PersonEmotionArray) -> FrameResult:
    """PersonEmotionArray -> FrameResult (timings are not carried)."""
    return FrameResult(stamp=stamp_to_sec(msg.header.stamp), frame_id=msg.header.frame_id,
                       width=msg.image_width, height=msg.image_height,
                       persons=[msg_to_person(p) for p in msg.persons], timings_ms={})


# -------------------------------------------------------------------- audio
def audio_frame_to_samples(msg: AudioFrame) -> np.ndarray:
    """AudioFrame -> float32 mono samples (InputError on bad format/size/NaN)."""
    return decode_pcm(msg.data, msg.sample_format, msg.channels, msg.sample_rate)


def samples_to_audio_frame(samples: np.ndarray, sample_rate: int, sample_format: str,
                           header: Header) -> AudioFrame:
    """float32 samples (n,) or (n, channels) -> AudioFrame."""
    channels = 1 if samples.ndim == 1 else int(samples.shape[1])
    return AudioFrame(header=header, sample_rate=int(sample_rate), channels=channels,
                      sample_format=sample_format, data=encode_pcm(samples, sample_format))


def cues_to_msg(cues: AudioCueResult, frame_id: str = '') -> AudioCues:
    """AudioCueResult -> AudioCues."""
    return AudioCues(
        header=make_header(cues.stamp, frame_id), window_s=float(cues.window_s),
        speech_probability=float(cues.speech_probability), voice_active=bool(cues.voice_active),
        help_detected=bool(cues.help_detected), keywords=list(cues.keywords),
        keyword_confidence=float(cues.keyword_confidence),
        scream_score=float(cues.scream_score), loudness_dbfs=float(cues.loudness_dbfs),
        pitch_hz=float(cues.pitch_hz), spectral_centroid_hz=float(cues.spectral_centroid_hz),
        vocal_arousal=float(cues.vocal_arousal))


def msg_to_cues(msg: AudioCues) -> AudioCueResult:
    """AudioCues -> AudioCueResult."""
    return AudioCueResult(
        stamp=stamp_to_sec(msg.header.stamp), window_s=msg.window_s,
        speech_probability=msg.speech_probability, voice_active=msg.voice_active,
        help_detected=msg.help_detected, keywords=list(msg.keywords),
        keyword_confidence=msg.keyword_confidence, scream_score=msg.scream_score,
        loudness_dbfs=msg.loudness_dbfs, pitch_hz=msg.pitch_hz,
        spectral_centroid_hz=msg.spectral_centroid_hz, vocal_arousal=msg.vocal_arousal)


# ------------------------------------------------------------------- alerts
def alert_to_msg(alert: Alert, frame_id: str = '') -> DistressAlert:
    """Alert -> DistressAlert."""
    header = make_header(alert.stamp, frame_id)
    msg = DistressAlert(header=header, track_id=int(alert.track_id), level=int(alert.level),
                        score=float(alert.score), reasons=list(alert.reasons))
    if alert.person is not None:
        msg.has_person = True
        msg.person = person_to_msg(alert.person, make_header(alert.stamp, frame_id))
    if alert.audio is not None:
        msg.has_audio = True
        msg.audio = cues_to_msg(alert.audio, frame_id)
    return msg


LEVEL_NAMES = {DistressAlert.LEVEL_WATCH: 'WATCH', DistressAlert.LEVEL_DISTRESS: 'DISTRESS',
               DistressAlert.LEVEL_EMERGENCY: 'EMERGENCY'}


def alert_to_dict(msg: DistressAlert) -> dict:
    """DistressAlert -> JSON-ready dict (for logs, the demo summary, the evaluation)."""
    out = {'stamp': stamp_to_sec(msg.header.stamp), 'track_id': int(msg.track_id),
           'level': LEVEL_NAMES.get(msg.level, str(msg.level)), 'score': round(msg.score, 4),
           'reasons': list(msg.reasons)}
    if msg.has_person:
        p = msg.person
        top = sorted(zip(p.category_names, p.category_scores), key=lambda t: -t[1])[:5]
        out['person'] = {'box': [p.x_min, p.y_min, p.x_max, p.y_max],
                         'top_categories': {n: round(float(s), 3) for n, s in top},
                         'vad': [_finite(p.valence), _finite(p.arousal), _finite(p.dominance)],
                         'model_id': p.model_id}
    if msg.has_audio:
        a = msg.audio
        out['audio'] = {'help_detected': a.help_detected, 'keywords': list(a.keywords),
                        'scream_score': round(a.scream_score, 3),
                        'loudness_dbfs': round(a.loudness_dbfs, 1)}
    return out


def format_alert(msg: DistressAlert) -> str:
    """One readable line for an operator log."""
    who = 'audio only' if msg.track_id == DistressAlert.AUDIO_ONLY else f'person #{msg.track_id}'
    return (f'[{LEVEL_NAMES.get(msg.level, msg.level)}] {who} score {msg.score:.2f} '
            f't={stamp_to_sec(msg.header.stamp):.2f}s: ' + '; '.join(msg.reasons))


def _finite(value: float) -> object:
    return round(float(value), 2) if math.isfinite(value) else None
