"""Configuration of each node: the pipeline config plus the node's own ROS options.

ROS-free, so the launch/config consistency test and the bag evaluation can
validate ``config/robot.yaml`` without starting ROS.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from emotion_ros.audio.cues import AudioCueConfig
from emotion_ros.config.schema import field, inline
from emotion_ros.fusion.distress import FusionConfig
from emotion_ros.perception.pipeline import PerceptionConfig

RELIABILITY = ('best_effort', 'reliable')


@dataclasses.dataclass(frozen=True)
class PerceptionNodeConfig:
    """Parameters of perception_node."""

    image_transport: str = field(
        'raw', "Type of the 'image' input: raw (sensor_msgs/Image) or compressed "
        '(sensor_msgs/CompressedImage).', choices=('raw', 'compressed'))
    reliability: str = field(
        'best_effort', 'QoS reliability of the image subscription (sensor-data QoS, depth 1).',
        choices=RELIABILITY)
    autostart: bool = field(
        False, 'Configure and activate on start-up (for use without a lifecycle manager).')
    publish_debug_image: bool = field(
        False, "Publish an annotated image on 'debug_image' (costs CPU).")
    explain_all_persons: bool = field(
        False, 'Generate a text explanation for every person in every processed frame '
        '(the backends that explain: llava and audio_visual; slow). The explain service works '
        'regardless.')
    explanation_max_new_tokens: int = field(
        48, 'Token budget of generated explanations.', min=1, max=1024)
    diagnostics_period_s: float = field(
        2.0, 'Period of /diagnostics messages.', positive=True)
    camera_name: str = field(
        '', 'Name of this camera: qualifies track ids (camera/track) and names it in incidents; '
        "'' uses the node's namespace without slashes (e.g. cam_left).")
    pipeline: PerceptionConfig = inline(PerceptionConfig, 'The perception pipeline.')


@dataclasses.dataclass(frozen=True)
class AudioNodeConfig:
    """Parameters of audio_node."""

    audio_msg_type: str = field(
        'emotion_ros', "Type of the 'audio' input: emotion_ros (emotion_ros_msgs/AudioFrame), "
        'audio_common (audio_common_msgs/AudioData) or audio_common_stamped '
        '(audio_common_msgs/AudioDataStamped); the latter two need audio_common_msgs.',
        choices=('emotion_ros', 'audio_common', 'audio_common_stamped'))
    audio_common_sample_rate: int = field(
        16000, 'Sample rate of audio_common AudioData input (it carries none).', positive=True)
    audio_common_channels: int = field(
        1, 'Channels of audio_common AudioData input.', min=1, max=32)
    audio_common_sample_format: str = field(
        'S16LE', 'Sample format of audio_common AudioData input.',
        choices=('S16LE', 'S32LE', 'F32LE'))
    diagnostics_period_s: float = field(
        2.0, 'Period of /diagnostics messages.', positive=True)
    cues: AudioCueConfig = inline(AudioCueConfig, 'Audio cue extraction.')


DURABILITY = ('volatile', 'transient_local')


@dataclasses.dataclass(frozen=True)
class DistressNodeConfig:
    """Parameters of distress_node (QoS and periods are read at start-up; fusion ones live)."""

    diagnostics_period_s: float = field(
        2.0, 'Period of /diagnostics messages.', positive=True)
    incidents_period_s: float = field(
        1.0, "Republish the incident list on 'incidents' this often (s), for listeners on "
        'lossy links; 0: only when an incident changes state or level.', min=0.0)
    incidents_depth: int = field(
        5, "History depth of 'incidents' (reliable, transient_local: a late joiner gets the "
        'latest lists; each holds every open incident).', min=1, max=1000)
    alerts_reliability: str = field(
        'reliable', "QoS reliability of the 'distress_alerts' event stream.", choices=RELIABILITY)
    alerts_durability: str = field(
        'volatile', "QoS durability of 'distress_alerts' (events; transient_local also lets late "
        'joiners get the last alerts_depth events).', choices=DURABILITY)
    alerts_depth: int = field(
        50, "History depth of 'distress_alerts'.", min=1, max=10000)
    publish_markers: bool = field(
        True, "Publish a visualization_msgs/MarkerArray of open incidents on 'incident_markers' "
        '(reliable, transient_local, depth 1) for RViz.')
    expect_audio: bool = field(
        True, "Audio is configured: WARN in /diagnostics when no 'audio_cues' arrived for "
        'input_timeout_s.')
    input_timeout_s: float = field(
        3.0, "WARN in /diagnostics when 'persons' (or expected 'audio_cues') stop arriving for "
        'this long.', positive=True)
    use_node_clock: bool = field(
        True, 'Judge stamps against the node clock (use_sim_time for bags): stamps more than '
        'max_future_s ahead are rejected; false: against the newest stamp received.')
    accepted_operators: Tuple[str, ...] = field(
        (), 'Operator ids allowed to command incidents (the operator_id of acknowledge/confirm/'
        'reject/resolve requests; exact match); empty: anyone who names themselves. A guard '
        "against another robot's operator UI on a shared domain, not a security boundary "
        '(docs/security.md).')
    fusion: FusionConfig = inline(FusionConfig, 'Distress fusion.')


@dataclasses.dataclass(frozen=True)
class MicrophoneNodeConfig:
    """Parameters of microphone_node."""

    source: str = field(
        'device', 'Where audio comes from: device (sounddevice capture) or wav (play wav_path '
        'as if it were a microphone).', choices=('device', 'wav'))
    device: str = field(
        '', "Capture device: name substring or index; '' for the system default.")
    sample_rate: int = field(16000, 'Capture sample rate in Hz.', min=8000, max=192000)
    channels: int = field(1, 'Captured channels.', min=1, max=32)
    chunk_ms: int = field(100, 'Audio per published frame in milliseconds.', min=10, max=2000)
    sample_format: str = field('S16LE', 'Published sample format.',
                               choices=('S16LE', 'S32LE', 'F32LE'))
    frame_id: str = field('microphone', 'frame_id of published audio frames.')
    wav_path: str = field('', 'WAV file played when source is wav.')
    wav_loop: bool = field(False, 'Loop the WAV file.')
    wav_wait_for_subscribers: int = field(
        1, "Before playing the WAV file, wait until this many subscribers of 'audio' are "
        'matched, so a listener that starts later than this node still hears the file from '
        'its start (0: play at once).', min=0, max=100)
    wav_start_delay_s: float = field(
        0.0, 'Wait this long before playing the WAV file (counted from when '
        'wav_wait_for_subscribers are matched).', min=0.0)
    reliability: str = field('reliable', 'QoS reliability of the audio publisher.',
                             choices=RELIABILITY)


@dataclasses.dataclass(frozen=True)
class AlertMonitorConfig:
    """Parameters of alert_monitor (the operator's monitor; read at start-up)."""

    output_jsonl: str = field(
        '', 'Append every alert as one JSON line to this file (empty: off).')
    show_incidents: bool = field(
        True, "Print a line per incident of 'incidents' when its state or level changes.")
    diagnostics_period_s: float = field(
        2.0, 'Period of /diagnostics messages.', positive=True)


NODE_CONFIGS = {
    'perception_node': PerceptionNodeConfig,
    'audio_node': AudioNodeConfig,
    'distress_node': DistressNodeConfig,
    'microphone_node': MicrophoneNodeConfig,
}
