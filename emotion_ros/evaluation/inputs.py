"""Decode camera and microphone messages read from a bag into what the pipeline takes.

Works on the message objects of a rosbags type store (same field names as
the ROS messages), so it needs no ROS installation. Audio may be our
``emotion_ros_msgs/AudioFrame`` or one of the two ``audio_common_msgs``
families: ros-drivers' ``AudioData``/``AudioDataStamped`` (bytes; the format
comes from an ``AudioInfo`` topic in the bag or from the audio node's
``audio_common_*`` parameters) and mgonzs13's ``AudioStamped``/``Audio``
(typed arrays with their own format info); the audio decoder is the one
``audio_node`` uses (:mod:`emotion_ros.audio.messages`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# One audio decoder for the nodes and the evaluation (re-exported here).
from emotion_ros.audio.messages import AudioDecoder, audio_info_format, RawAudioFormat
from emotion_ros.evaluation.bags import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE
from emotion_ros.errors import InputError


def decode_image_message(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 image of a ``sensor_msgs`` Image or CompressedImage.

    Raises:
        InputError: from the image codec (encoding, size, corrupt data), or
            ``image_type`` for another message type.
    """
    from emotion_ros.perception.image_codec import decode_compressed, decode_image
    if msgtype == IMAGE_TYPE:
        return decode_image(msg.encoding, int(msg.width), int(msg.height), int(msg.step),
                            msg.data, is_bigendian=bool(msg.is_bigendian))
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return decode_compressed(msg.format, msg.data)
    raise InputError(f'{msgtype} is not an image type', kind='image_type')


__all__ = ['AudioDecoder', 'RawAudioFormat', 'audio_info_format', 'decode_image_message']
