"""bag_player: a real node process publishing a real bag to real subscribers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import wait_until
from emotion_ros.evaluation import bags
from emotion_ros.evaluation.bags import BagWriter, project_typestore

pytest.importorskip('rclpy')
START = 2000.0
N = 20
PERIOD = 0.1


@pytest.fixture
def bag(tmp_path):
    """A bag with N small images on /cam and N audio frames on /mic, 0.1 s apart."""
    store = project_typestore()
    path = tmp_path / 'bag'
    with BagWriter(path, 'mcap', store) as writer:
        writer.add_topic('/cam', bags.IMAGE_TYPE)
        writer.add_topic('/mic', bags.AUDIO_FRAME_TYPE)
        for i in range(N):
            t = START + i * PERIOD
            writer.write('/cam', int(t * 1e9),
                         bags.image_message(store, np.full((12, 16, 3), i, np.uint8), t))
            writer.write('/mic', int(t * 1e9) + 5_000_000,
                         bags.audio_frame_message(store, np.full(160, i / 100, np.float32),
                                                  16000, t + 0.005))
    return path


def _subscribe(node, msg_type, topic):
    got = []
    node.create_subscription(msg_type, topic, lambda m: got.append((time.monotonic(), m)), 100)
    return got


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_plays_every_message_with_its_original_timing(bag, start_node, ros_node):
    """All messages arrive intact, in order, spaced by the recorded period divided by the rate."""
    from emotion_ros_msgs.msg import AudioFrame
    from sensor_msgs.msg import Image
    node = ros_node('listener')
    images = _subscribe(node, Image, '/cam')
    audio = _subscribe(node, AudioFrame, '/mic')
    player = start_node('bag_player', str(bag), '--rate', '2', '--wait-for-subscribers', '1',
                        '--no-restamp')
    assert wait_until(lambda: len(images) == N and len(audio) == N, 30, ros_node.spin), \
        player.output()
    assert [m.data[0] for _, m in images] == list(range(N))
    assert [round(_stamp(m) - START, 3) for _, m in images] == [round(i * PERIOD, 3)
                                                                for i in range(N)]
    from emotion_ros.audio.pcm import decode_pcm
    for i, (_, msg) in enumerate(audio):
        samples = decode_pcm(bytes(msg.data), msg.sample_format, msg.channels, msg.sample_rate)
        np.testing.assert_allclose(samples, i / 100, atol=1 / 32768)
    gaps = np.diff([t for t, _ in images])
    assert np.median(gaps) == pytest.approx(PERIOD / 2, abs=0.02)
    span = images[-1][0] - images[0][0]
    assert span == pytest.approx((N - 1) * PERIOD / 2, abs=0.3)
    assert wait_until(lambda: not player.alive(), 10), 'player should exit when the bag ends'
    assert player.proc.returncode == 0
    assert 'published 40 messages' in player.output()


def test_remap_topic_filter_and_start_offset(bag, start_node, ros_node):
    """--topics plays only the named topics, --remap renames them, --start-offset skips ahead."""
    from emotion_ros_msgs.msg import AudioFrame
    from sensor_msgs.msg import Image
    node = ros_node('listener')
    renamed = _subscribe(node, Image, '/camera/image_raw')
    original = _subscribe(node, Image, '/cam')
    audio = _subscribe(node, AudioFrame, '/mic')
    player = start_node('bag_player', str(bag), '--topics', '/cam', '--remap',
                        '/cam:=/camera/image_raw', '--start-offset', '1.0', '--rate', '5',
                        '--wait-for-subscribers', '1')
    assert wait_until(lambda: not player.alive(), 30, ros_node.spin), player.output()
    assert wait_until(lambda: len(renamed) == N - 10, 5, ros_node.spin), player.output()
    assert [m.data[0] for _, m in renamed] == list(range(10, N))
    ros_node.spin(0.3)
    assert original == [] and audio == []


def test_loops_until_stopped(bag, start_node, ros_node):
    """With --loop the bag plays again from the start, as parameters from --ros-args also work."""
    from sensor_msgs.msg import Image
    node = ros_node('listener')
    images = _subscribe(node, Image, '/cam')
    player = start_node('bag_player', '--loop', '--ros-args', '-p', f'bag:={bag}',
                        '-p', 'rate:=10.0', '-p', 'topics:=[/cam]',
                        '-p', 'wait_for_subscribers:=1')
    assert wait_until(lambda: len(images) >= N + 5, 30, ros_node.spin), player.output()
    values = [m.data[0] for _, m in images]
    assert values[:N] == list(range(N)) and values[N:N + 5] == list(range(5))
    assert player.alive()
    assert player.stop() in (0, -2, 130)


@pytest.mark.parametrize('args, message', [
    (['/nonexistent/bag'], 'bag not found'),
    (['BAG', '--topics', '/nope'], "topic '/nope' is not in bag"),
    (['BAG', '--remap', '/cam'], "remap: expected 'from:=to'"),
    ([], 'no bag given'),
])
def test_bad_arguments_exit_with_a_clear_message(bag, start_node, args, message):
    """A missing bag, an unknown topic, a bad remap or no bag at all stop the node with exit 2."""
    args = [str(bag) if a == 'BAG' else a for a in args]
    player = start_node('bag_player', *args)
    assert wait_until(lambda: not player.alive(), 20), player.output()
    assert player.proc.returncode == 2
    assert message in player.output()


@pytest.mark.parametrize('rate', [1.0, 2.0])
def test_restamps_headers_to_the_replay_time(bag, start_node, ros_node, rate):
    """By default every header stamp moves to the replay time: the first message is stamped
    when it is played (wall clock, as a live camera would), every stamp keeps its recorded
    offset from the first message (divided by the rate), images and audio alike, and the
    payload is untouched."""
    from emotion_ros_msgs.msg import AudioFrame
    from sensor_msgs.msg import Image
    node = ros_node('listener')
    images = _subscribe(node, Image, '/cam')
    audio = _subscribe(node, AudioFrame, '/mic')
    before = time.time()
    player = start_node('bag_player', str(bag), '--rate', str(rate),
                        '--wait-for-subscribers', '1')
    assert wait_until(lambda: len(images) == N and len(audio) == N, 30, ros_node.spin), \
        player.output()
    after = time.time()
    assert [m.data[0] for _, m in images] == list(range(N))
    first = _stamp(images[0][1])
    # Replay time, not bag time (START = 2000 s after the epoch): within this test's run.
    assert before <= first <= after
    assert all(before <= _stamp(m) <= after + 1 for _, m in images + audio)
    np.testing.assert_allclose([_stamp(m) - first for _, m in images],
                               [i * PERIOD / rate for i in range(N)], atol=2e-6)
    np.testing.assert_allclose([_stamp(m) - first for _, m in audio],
                               [(i * PERIOD + 0.005) / rate for i in range(N)], atol=2e-6)
    assert 'moved to the replay time' in player.output()


@pytest.mark.parametrize('endian', ['<', '>'])
def test_restamp_rewrites_only_the_stamp(endian):
    """restamp() changes header.stamp of serialized Image / CameraInfo / AudioFrame data in
    either byte order and leaves every other byte as it was; other encapsulations are
    refused with a reason."""
    import struct

    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from emotion_ros.errors import InputError
    from emotion_ros.ros.bag_player_node import restamp
    from emotion_ros_msgs.msg import AudioFrame
    rng = np.random.default_rng(0)
    for cls in (Image, CameraInfo, AudioFrame):
        for _ in range(20):
            msg = cls()
            msg.header.stamp.sec = int(rng.integers(0, 2**30))
            msg.header.stamp.nanosec = int(rng.integers(0, 10**9))
            msg.header.frame_id = 'cam'
            data = serialize_message(msg)
            if endian == '>':  # the same stamp as a big-endian writer would store it
                stamp = struct.pack('>iI', msg.header.stamp.sec, msg.header.stamp.nanosec)
                data = b'\x00\x00' + data[2:4] + stamp + data[12:]
            old = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            shift = int(rng.integers(-10**15, 10**15))
            out = restamp(data, lambda ns: ns + shift)
            sec, nanosec = struct.unpack_from(endian + 'iI', out, 4)
            assert sec * 10**9 + nanosec == old + shift and 0 <= nanosec < 10**9
            assert out[:4] == data[:4] and out[12:] == data[12:]
            if endian == '<':
                back = deserialize_message(out, cls)
                assert back.header.frame_id == 'cam'
    with pytest.raises(InputError, match='encapsulation'):
        restamp(b'\x00\x03' + bytes(20), lambda ns: ns)
