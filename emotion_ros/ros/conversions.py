"""Conversions between ROS messages and the pipeline's plain types (the only place that does)."""

from __future__ import annotations

import math
from typing import List

import numpy as np
from builtin_interfaces.msg import Time
from emotion_ros_msgs.msg import (AudioCues, AudioFrame, DistressAlert, Incident,
                                  IncidentHistoryEntry, PersonEmotion, PersonEmotionArray,
                                  PersonPosition, Transcript)
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from emotion_ros.audio.pcm import decode_pcm, encode_pcm
from emotion_ros.llm.contract import CATEGORIES, NUM_CATEGORIES
from emotion_ros.errors import InputError
from emotion_ros.perception.image_codec import decode_compressed, decode_image, encode_image
from emotion_ros.types import (Alert, AudioCueResult, EmotionOutput, FrameResult,
                               LEVEL_NAMES as _LEVEL_NAMES, PersonEstimate, Position)
from emotion_ros.types import Transcript as TranscriptResult


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
    msg.camera = person.camera
    msg.evidence_weight = float(person.evidence_weight)
    msg.appearance = [float(v) for v in person.appearance]
    if person.position is not None:
        msg.has_position = True
        msg.position = position_to_msg(person.position, header.stamp)
    msg.x_min, msg.y_min, msg.x_max, msg.y_max = (float(v) for v in person.box)
    msg.detection_confidence = float(person.detection_confidence)
    msg.category_names = list(CATEGORIES)
    msg.category_scores = [float(v) for v in emotion.scores]
    if emotion.class_names:
        msg.class_names = list(emotion.class_names)
        msg.class_scores = [float(v) for v in emotion.class_scores]
    msg.valence, msg.arousal, msg.dominance = (float(v) for v in emotion.vad)
    msg.face_visible = bool(emotion.face_visible)
    msg.explanation = emotion.explanation
    msg.model_id = person.model_id
    if person.crop_jpeg:
        msg.crop = CompressedImage(header=header, format='jpeg', data=person.crop_jpeg)
    return msg


def frame_to_msg(result: FrameResult, processing_ms: float) -> PersonEmotionArray:
    """FrameResult -> PersonEmotionArray."""
    return _person_array(result, result.persons, processing_ms)


def _person_array(result: FrameResult, persons: List[PersonEstimate],
                  processing_ms: float) -> PersonEmotionArray:
    header = make_header(result.stamp, result.frame_id)
    return PersonEmotionArray(header=header, camera=result.camera, image_width=result.width,
                              image_height=result.height,
                              persons=[person_to_msg(p, header) for p in persons],
                              processing_ms=float(processing_ms))


def voice_to_msg(result: FrameResult, processing_ms: float) -> PersonEmotionArray:
    """The audio-only estimate of a frame (``result.voice``) as a one-person array."""
    return _person_array(result, [result.voice] if result.voice is not None else [],
                         processing_ms)


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
    classes, probs = list(msg.class_names), list(msg.class_scores)
    if len(classes) != len(probs):
        raise InputError(f'PersonEmotion track {msg.track_id}: {len(classes)} class names '
                         f'but {len(probs)} class scores', kind='person_msg')
    emotion = EmotionOutput(scores=vector, vad=(msg.valence, msg.arousal, msg.dominance),
                            face_visible=msg.face_visible, explanation=msg.explanation,
                            class_names=tuple(classes),
                            class_scores=np.asarray(probs, np.float32) if classes else None)
    weight = float(msg.evidence_weight)
    return PersonEstimate(track_id=msg.track_id,
                          box=(msg.x_min, msg.y_min, msg.x_max, msg.y_max),
                          detection_confidence=msg.detection_confidence, emotion=emotion,
                          model_id=msg.model_id, crop_jpeg=bytes(msg.crop.data),
                          camera=msg.camera,
                          evidence_weight=weight if math.isfinite(weight) and weight > 0 else 0.0,
                          position=msg_to_position(msg.position) if msg.has_position else None,
                          appearance=tuple(float(v) for v in msg.appearance
                                           if math.isfinite(v)))


def msg_to_frame(msg: PersonEmotionArray) -> FrameResult:
    """PersonEmotionArray -> FrameResult (timings are not carried)."""
    persons = [msg_to_person(p) for p in msg.persons]
    camera = msg.camera
    for person in persons:
        # Track ids are per camera: persons without a camera take the array's.
        person.camera = person.camera or camera
    return FrameResult(stamp=stamp_to_sec(msg.header.stamp), frame_id=msg.header.frame_id,
                       width=msg.image_width, height=msg.image_height,
                       persons=persons, timings_ms={}, camera=camera)


# ---------------------------------------------------------------- positions
def position_to_msg(position: Position, stamp: Time) -> PersonPosition:
    """Position -> PersonPosition (the point stamped like the image it was seen in)."""
    msg = PersonPosition(camera_frame=position.camera_frame, azimuth=float(position.azimuth),
                         elevation=float(position.elevation), source=position.source)
    msg.point = PointStamped(header=Header(stamp=stamp, frame_id=position.frame_id))
    if position.has_point:
        msg.has_point = True
        msg.point.point = Point(x=float(position.xyz[0]), y=float(position.xyz[1]),
                                z=float(position.xyz[2]))
        msg.covariance = [float(v) for v in position.covariance]
    return msg


def msg_to_position(msg: PersonPosition) -> Position:
    """PersonPosition -> Position (NaN point when it has none)."""
    nan = math.nan
    if msg.has_point:
        xyz = (msg.point.point.x, msg.point.point.y, msg.point.point.z)
        cov = tuple(float(v) for v in msg.covariance)
    else:
        xyz, cov = (nan, nan, nan), (nan,) * 9
    return Position(frame_id=msg.point.header.frame_id or msg.camera_frame, xyz=xyz,
                    covariance=cov, azimuth=msg.azimuth, elevation=msg.elevation,
                    camera_frame=msg.camera_frame, source=msg.source or 'bearing')


# -------------------------------------------------------------- transcripts
def msg_to_transcript(msg: Transcript) -> TranscriptResult:
    """emotion_ros_msgs/Transcript -> plain Transcript."""
    return TranscriptResult(
        stamp=stamp_to_sec(msg.header.stamp), end=stamp_to_sec(msg.end),
        frame_id=msg.header.frame_id, text=msg.text, help_detected=msg.help_detected,
        help_phrase=msg.help_phrase, help_score=msg.help_score, language=msg.language,
        confidence=msg.confidence, detector=msg.detector, model_id=msg.model_id)


def transcript_to_msg(transcript: TranscriptResult) -> Transcript:
    """Plain Transcript -> emotion_ros_msgs/Transcript."""
    return Transcript(header=make_header(transcript.stamp, transcript.frame_id),
                      end=sec_to_stamp(transcript.end), text=transcript.text,
                      language=transcript.language, confidence=float(transcript.confidence),
                      help_detected=bool(transcript.help_detected),
                      help_phrase=transcript.help_phrase,
                      help_score=float(transcript.help_score), detector=transcript.detector,
                      model_id=transcript.model_id)


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
    """Alert -> DistressAlert (header: the evidence's stamp and frame_id)."""
    header = make_header(alert.stamp, alert.frame_id or frame_id)
    msg = DistressAlert(header=header, incident_id=int(alert.incident_id),
                        track_id=int(alert.track_id), camera=alert.camera,
                        level=int(alert.level), score=float(alert.score),
                        reasons=list(alert.reasons))
    if alert.person is not None:
        msg.has_person = True
        stamp = alert.person_stamp if math.isfinite(alert.person_stamp) else alert.stamp
        person_header = make_header(stamp, alert.person_frame_id or alert.frame_id or frame_id)
        msg.person = person_to_msg(alert.person, person_header)
        if alert.person.position is not None:
            msg.has_position = True
            msg.position = msg.person.position
    if alert.audio is not None:
        msg.has_audio = True
        msg.audio = cues_to_msg(alert.audio, alert.frame_id or frame_id)
    if alert.transcript is not None:
        msg.has_transcript = True
        msg.transcript = transcript_to_msg(alert.transcript)
    return msg


def incident_to_msg(incident) -> Incident:
    """emotion_ros.fusion.incidents.Incident -> emotion_ros_msgs/Incident."""
    msg = Incident(header=make_header(incident.stamp, incident.frame_id), id=int(incident.id),
                   state=int(incident.state), level=int(incident.level),
                   score=float(incident.score), first_seen=sec_to_stamp(incident.first_seen),
                   last_seen=sec_to_stamp(incident.last_seen), reasons=list(incident.reasons),
                   acknowledged=incident.acknowledged, confirmed=incident.confirmed,
                   rejected=incident.rejected, note=incident.note,
                   resolution=incident.resolution, alert_count=int(incident.alerts),
                   cameras=sorted(incident.cameras), tracks=incident.track_names,
                   help_heard=incident.help_heard,
                   history=[history_entry_to_msg(e) for e in incident.history],
                   related_incident_ids=sorted(int(i) for i in incident.related_ids))
    if incident.position is not None:
        stamp = incident.person_stamp if math.isfinite(incident.person_stamp) else \
            incident.stamp
        msg.has_position = True
        msg.position = position_to_msg(incident.position, sec_to_stamp(stamp))
    if incident.person is not None and not incident.audio_only:
        msg.has_person = True
        msg.person = person_to_msg(incident.person, make_header(
            incident.person_stamp if math.isfinite(incident.person_stamp) else incident.stamp,
            incident.person_frame_id))
    if incident.audio is not None:
        msg.has_audio = True
        msg.audio = cues_to_msg(incident.audio, _audio_frame(incident))
    if incident.transcript is not None:
        msg.has_transcript = True
        msg.transcript = transcript_to_msg(incident.transcript)
    return msg


def history_entry_to_msg(entry) -> IncidentHistoryEntry:
    """emotion_ros.fusion.incidents.HistoryEntry -> emotion_ros_msgs/IncidentHistoryEntry."""
    return IncidentHistoryEntry(stamp=sec_to_stamp(entry.stamp), operator_id=entry.operator_id,
                                action=entry.action, note=entry.note,
                                accepted=bool(entry.accepted), message=entry.message,
                                state=int(entry.state))


def format_history_entry(entry: IncidentHistoryEntry) -> str:
    """One readable line per history entry: when, who, what, the outcome and the note."""
    when = stamp_to_sec(entry.stamp)
    outcome = (f'-> {STATE_NAMES.get(entry.state, entry.state)}' if entry.accepted
               else f'refused: {entry.message.split(" refused: ", 1)[-1]}')
    note = f' "{entry.note}"' if entry.note else ''
    return f't={when:.2f}s {entry.operator_id or "(unnamed)"} {entry.action}{note} {outcome}'


def _audio_frame(incident) -> str:
    if incident.transcript is not None:
        return incident.transcript.frame_id
    return incident.frame_id if incident.audio_only else ''


LEVEL_NAMES = dict(_LEVEL_NAMES)


def alert_to_dict(msg: DistressAlert) -> dict:
    """DistressAlert -> JSON-ready dict (for logs, the demo summary, the evaluation)."""
    out = {'stamp': stamp_to_sec(msg.header.stamp), 'frame_id': msg.header.frame_id,
           'incident_id': int(msg.incident_id), 'track_id': int(msg.track_id),
           'camera': msg.camera,
           'level': LEVEL_NAMES.get(msg.level, str(msg.level)), 'score': round(msg.score, 4),
           'reasons': list(msg.reasons)}
    if msg.has_position:
        out['position'] = position_to_dict(msg.position)
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


def position_to_dict(msg: PersonPosition) -> dict:
    """PersonPosition -> JSON-ready dict."""
    out = {'camera_frame': msg.camera_frame, 'azimuth_deg': round(math.degrees(msg.azimuth), 2),
           'elevation_deg': round(math.degrees(msg.elevation), 2), 'source': msg.source}
    if msg.has_point:
        p = msg.point.point
        out['frame_id'] = msg.point.header.frame_id
        out['xyz'] = [round(p.x, 3), round(p.y, 3), round(p.z, 3)]
        out['sigma_m'] = round(math.sqrt(max(msg.covariance[0], msg.covariance[4],
                                             msg.covariance[8], 0.0)), 3)
    return out


def format_alert(msg: DistressAlert) -> str:
    """One readable line for an operator log."""
    who = 'audio only' if msg.track_id == DistressAlert.AUDIO_ONLY else f'person #{msg.track_id}'
    if msg.camera and msg.track_id != DistressAlert.AUDIO_ONLY:
        who += f' ({msg.camera})'
    return (f'[{LEVEL_NAMES.get(msg.level, msg.level)}] {who} score {msg.score:.2f} '
            f't={stamp_to_sec(msg.header.stamp):.2f}s incident {msg.incident_id}: '
            + '; '.join(msg.reasons))


STATE_NAMES = {Incident.STATE_NEW: 'NEW', Incident.STATE_UPDATED: 'UPDATED',
               Incident.STATE_ESCALATED: 'ESCALATED', Incident.STATE_ACKNOWLEDGED: 'ACKNOWLEDGED',
               Incident.STATE_CONFIRMED: 'CONFIRMED', Incident.STATE_REJECTED: 'REJECTED',
               Incident.STATE_RESOLVED: 'RESOLVED', Incident.STATE_STALE: 'STALE'}


def format_incident(msg: Incident) -> str:
    """One readable line per incident for an operator view."""
    where = ''
    if msg.has_position and msg.position.has_point:
        p = msg.position.point.point
        where = f' at ({p.x:.1f}, {p.y:.1f}, {p.z:.1f}) m in {msg.position.point.header.frame_id}'
    elif msg.has_position:
        where = f' bearing {math.degrees(msg.position.azimuth):+.0f} deg in ' \
            f'{msg.position.camera_frame}'
    marks = (('ack', msg.acknowledged), ('confirmed', msg.confirmed),
             ('rejected', msg.rejected))
    flags = ''.join(f' [{f}]' for f, on in marks if on)
    who = ', '.join(msg.tracks) or 'audio only'
    last = next((e for e in reversed(msg.history) if e.accepted), None)
    by = f' (last command: {last.action} by {last.operator_id or "(unnamed)"})' if last else ''
    return (f'#{msg.id} {LEVEL_NAMES.get(msg.level, msg.level)} '
            f'{STATE_NAMES.get(msg.state, msg.state)}{flags} score {msg.score:.2f} ({who})'
            f'{where}: ' + '; '.join(msg.reasons) + by)


def _finite(value: float) -> object:
    return round(float(value), 2) if math.isfinite(value) else None
