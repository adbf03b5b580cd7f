"""Bags: real rosbag2 files (sqlite3 and mcap) written, read back, damaged and made from media."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from emotion_ros.evaluation import bags
from emotion_ros.evaluation.bags import BagReader, BagWriter, project_typestore
from emotion_ros.evaluation.bagtools import make_bag, MakeBagOptions
from emotion_ros.errors import InputError
from emotion_ros.evaluation.inputs import (audio_info_format, AudioDecoder,
                                           decode_image_message)

STORAGES = ('sqlite3', 'mcap')
START = 1000.0


def _pattern(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    # Smooth (so JPEG keeps it close) and different per frame.
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 6 + 10 * i, yy * 8, (xx + yy) * 3 + 5 * i], axis=2).astype(np.uint8)


def _tone(i: int, n: int = 1600) -> np.ndarray:
    return (0.25 * np.sin(np.arange(n) * 0.05 * (i + 1))).astype(np.float32)


def write_sample_bag(path: Path, storage: str, n: int = 6) -> None:
    """Image, CompressedImage and AudioFrame messages at known stamps, 0.1 s apart."""
    store = project_typestore()
    with BagWriter(path, storage, store) as writer:
        writer.add_topic('/cam', bags.IMAGE_TYPE)
        writer.add_topic('/cam_jpeg', bags.COMPRESSED_IMAGE_TYPE)
        writer.add_topic('/mic', bags.AUDIO_FRAME_TYPE)
        for i in range(n):
            t = START + 0.1 * i
            # Written out of order on purpose: readers must return time order.
            writer.write('/mic', int((t + 0.05) * 1e9),
                         bags.audio_frame_message(store, _tone(i), 16000, t + 0.05))
            writer.write('/cam', int(t * 1e9), bags.image_message(store, _pattern(i), t,
                                                                  'cam', 'bgr8'))
            writer.write('/cam_jpeg', int(t * 1e9) + 1,
                         bags.compressed_image_message(store, _pattern(i), t, 'cam'))


@pytest.mark.parametrize('storage', STORAGES)
def test_round_trip_in_time_order(tmp_path, storage):
    """Messages come back in receive-time order with the content, stamps and types written."""
    path = tmp_path / 'bag'
    write_sample_bag(path, storage)
    with BagReader(path) as bag:
        info = bag.info
        assert info.storage == storage and info.message_count == 18
        assert {t.name: (t.msgtype, t.count) for t in info.topics.values()} == {
            '/cam': (bags.IMAGE_TYPE, 6), '/cam_jpeg': (bags.COMPRESSED_IMAGE_TYPE, 6),
            '/mic': (bags.AUDIO_FRAME_TYPE, 6)}
        assert info.start_s == pytest.approx(START) and info.duration_s == pytest.approx(0.55)
        messages = list(bag.messages())
        times = [m.log_time_ns for m in messages]
        assert times == sorted(times) and len(messages) == 18
        decoder = AudioDecoder()
        images = audio = 0
        for message in messages:
            msg = bag.deserialize(message)
            i = round((bags.stamp_seconds(msg.header) - START) / 0.1 - 0.01)
            if message.topic == '/cam':
                assert msg.encoding == 'bgr8'
                np.testing.assert_array_equal(decode_image_message(msg, message.msgtype),
                                              _pattern(i))
                images += 1
            elif message.topic == '/cam_jpeg':
                rgb = decode_image_message(msg, message.msgtype)
                assert rgb.shape == (24, 32, 3)
                assert np.abs(rgb.astype(int) - _pattern(i)).mean() < 4  # lossy JPEG
            else:
                samples, rate, stamp = decoder.decode(msg, message.msgtype, message.log_time)
                assert rate == 16000 and stamp == pytest.approx(START + 0.1 * i + 0.05)
                np.testing.assert_allclose(samples, _tone(i), atol=1 / 32768)
                audio += 1
        assert images == 6 and audio == 6
        # A topic filter and a time window stream only what was asked for.
        window = list(bag.messages(['/cam'], start_ns=int((START + 0.15) * 1e9),
                                   stop_ns=int((START + 0.35) * 1e9)))
        assert [round(m.log_time - START, 2) for m in window] == [0.2, 0.3]


def test_stored_bytes_deserialize_with_rclpy(tmp_path):
    """The CDR bytes in a bag are what ROS 2 itself decodes (rclpy.serialization)."""
    serialization = pytest.importorskip('rclpy.serialization')
    msgs = pytest.importorskip('emotion_ros_msgs.msg')
    sensor = pytest.importorskip('sensor_msgs.msg')
    path = tmp_path / 'bag'
    write_sample_bag(path, 'mcap', n=2)
    with BagReader(path) as bag:
        for message in bag.messages(['/cam', '/mic']):
            cls = sensor.Image if message.topic == '/cam' else msgs.AudioFrame
            ros_msg = serialization.deserialize_message(bytes(message.data), cls)
            ours = bag.deserialize(message)
            assert ros_msg.header.stamp.sec == ours.header.stamp.sec
            assert ros_msg.header.stamp.nanosec == ours.header.stamp.nanosec
            assert bytes(ros_msg.data) == bytes(ours.data)


def test_unknown_topic_error_lists_the_bag_topics(tmp_path):
    """Asking for a topic the bag lacks names it and lists the topics (with types) the bag has."""
    path = tmp_path / 'bag'
    write_sample_bag(path, 'sqlite3', n=1)
    with BagReader(path) as bag:
        with pytest.raises(InputError) as err:
            list(bag.messages(['/camera/image_raw']))
        assert err.value.kind == 'bag_topic'
        text = str(err.value)
        assert "'/camera/image_raw'" in text and '/cam (sensor_msgs/msg/Image' in text
        assert '/mic (emotion_ros_msgs/msg/AudioFrame' in text
        with pytest.raises(InputError, match='expected one of'):
            bag.require_topic('/mic', bags.IMAGE_TYPES)


def test_missing_bag_and_non_bag_paths(tmp_path):
    """A missing path, an empty folder and a non-bag file are clear 'bag_missing' errors."""
    with pytest.raises(InputError, match='bag not found') as err:
        BagReader(tmp_path / 'nope')
    assert err.value.kind == 'bag_missing'
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputError, match='no metadata.yaml'):
        BagReader(tmp_path / 'empty')
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(InputError, match='not a rosbag2 bag'):
        BagReader(tmp_path / 'notes.txt')


@pytest.mark.parametrize('storage', STORAGES)
def test_truncated_and_corrupt_bags_are_clear_errors(tmp_path, storage):
    """A storage file cut in half or with a damaged header raises 'bag_corrupt' naming the bag."""
    path = tmp_path / 'bag'
    write_sample_bag(path, storage)
    suffix = '.db3' if storage == 'sqlite3' else '.mcap'
    for name, damage in (('truncated', lambda b: b[:len(b) // 2]),
                         ('corrupt', lambda b: b[:16] + b'\x00garbage\xff' * 40 + b[416:])):
        damaged = tmp_path / name
        shutil.copytree(path, damaged)
        target = damaged / f'bag{suffix}'
        target.write_bytes(damage(target.read_bytes()))
        with pytest.raises(InputError) as err:
            with BagReader(damaged) as bag:
                for message in bag.messages():
                    bag.deserialize(message)
        assert err.value.kind == 'bag_corrupt', str(err.value)
        assert str(damaged) in str(err.value)


def test_bag_without_metadata_is_recovered(tmp_path):
    """A recording killed before metadata.yaml was written is read from its storage file."""
    path = tmp_path / 'bag'
    write_sample_bag(path, 'sqlite3')
    (path / 'metadata.yaml').unlink()
    with BagReader(path) as bag:
        assert bag.info.recovered and bag.info.message_count == 18
        assert sum(1 for _ in bag.messages(['/cam'])) == 6


def test_writer_never_overwrites(tmp_path):
    """Writing to an existing path or with an unknown storage is refused."""
    (tmp_path / 'bag').mkdir()
    with pytest.raises(InputError, match='never overwritten'):
        BagWriter(tmp_path / 'bag')
    with pytest.raises(InputError, match='unknown bag storage'):
        BagWriter(tmp_path / 'other', storage='rosbag1')


# audio_common_msgs is not installed anywhere here: its definitions must come
# from the bag. Two real-world packages define AudioData differently.
DRIVERS_DEFS = {
    'audio_common_msgs/msg/AudioData': 'uint8[] data\n',
    'audio_common_msgs/msg/AudioDataStamped': ('std_msgs/Header header\n'
                                               'audio_common_msgs/AudioData audio\n'),
    'audio_common_msgs/msg/AudioInfo': ('uint8 channels\nuint32 sample_rate\n'
                                        'string sample_format\nuint32 bitrate\n'
                                        'string coding_format\n'),
}
MGONZS13_DEFS = {
    'audio_common_msgs/msg/AudioData': ('float32[] float32_data\nint32[] int32_data\n'
                                        'int16[] int16_data\nint8[] int8_data\n'
                                        'uint8[] uint8_data\n'),
    'audio_common_msgs/msg/AudioInfo': 'int8 format\nint32 channels\nint32 rate\nint32 chunk\n',
    'audio_common_msgs/msg/Audio': ('audio_common_msgs/AudioData audio_data\n'
                                    'audio_common_msgs/AudioInfo info\n'),
    'audio_common_msgs/msg/AudioStamped': ('std_msgs/Header header\n'
                                           'audio_common_msgs/Audio audio\n'),
}


def _store_with(defs):
    from rosbags.typesys import get_types_from_msg
    types = {}
    for name, text in defs.items():
        types.update(get_types_from_msg(text, name))
    return project_typestore(types)


def test_audio_common_types_decode_from_the_bags_own_definitions(tmp_path):
    """Both audio_common variants decode from definitions stored in the bag, AudioInfo applied."""
    stereo = np.stack([_tone(1), -_tone(1)], axis=1)  # averages to silence
    mono = _tone(2)
    # ros-drivers: bytes + an AudioInfo topic announcing the format.
    store = _store_with(DRIVERS_DEFS)
    path_a = tmp_path / 'drivers'
    with BagWriter(path_a, 'mcap', store) as writer:
        writer.add_topic('/audio/audio_info', 'audio_common_msgs/msg/AudioInfo')
        writer.add_topic('/audio/audio', 'audio_common_msgs/msg/AudioDataStamped')
        writer.write('/audio/audio_info', int(START * 1e9), store.types[
            'audio_common_msgs/msg/AudioInfo'](channels=1, sample_rate=8000,
                                               sample_format='S32LE', bitrate=0,
                                               coding_format='wave'))
        from emotion_ros.audio.pcm import encode_pcm
        data = np.frombuffer(encode_pcm(mono, 'S32LE'), np.uint8)
        payload = store.types['audio_common_msgs/msg/AudioData'](data=data)
        writer.write('/audio/audio', int((START + 0.5) * 1e9), store.types[
            'audio_common_msgs/msg/AudioDataStamped'](
                header=bags.make_header(store, START + 0.4), audio=payload))
    # mgonzs13: typed int16 samples with their own info.
    store = _store_with(MGONZS13_DEFS)
    path_b = tmp_path / 'mgonzs13'
    with BagWriter(path_b, 'sqlite3', store) as writer:
        writer.add_topic('/audio', 'audio_common_msgs/msg/AudioStamped')
        types = store.types
        empty = {k: np.zeros(0, d) for k, d in (('float32_data', np.float32),
                                                ('int32_data', np.int32),
                                                ('int8_data', np.int8),
                                                ('uint8_data', np.uint8))}
        audio_data = types['audio_common_msgs/msg/AudioData'](
            int16_data=(stereo * 32767).astype(np.int16).ravel(), **empty)
        info = types['audio_common_msgs/msg/AudioInfo'](format=8, channels=2, rate=22050,
                                                        chunk=len(stereo))
        writer.write('/audio', int(START * 1e9), types['audio_common_msgs/msg/AudioStamped'](
            header=bags.make_header(store, START),
            audio=types['audio_common_msgs/msg/Audio'](audio_data=audio_data, info=info)))
    assert 'audio_common_msgs/msg/AudioData' not in project_typestore().types
    with BagReader(path_a) as bag:
        decoder = AudioDecoder()
        got = []
        for message in bag.messages():
            msg = bag.deserialize(message)
            if message.msgtype.endswith('AudioInfo'):
                decoder.raw_format = audio_info_format(msg)
            else:
                got.append(decoder.decode(msg, message.msgtype, message.log_time))
        samples, rate, stamp = got[0]
        assert rate == 8000 and stamp == pytest.approx(START + 0.4)
        np.testing.assert_allclose(samples, mono, atol=1e-6)
    with BagReader(path_b) as bag:
        message = next(bag.messages())
        samples, rate, stamp = AudioDecoder().decode(bag.deserialize(message), message.msgtype,
                                                     message.log_time)
        assert rate == 22050 and len(samples) == len(stereo)
        np.testing.assert_allclose(samples, 0.0, atol=1e-4)


def _read_peak(path: Path) -> tuple:
    """(frames read, peak traced memory) while streaming and decoding every image."""
    with BagReader(path) as bag:
        tracemalloc.start()
        try:
            count = 0
            for message in bag.messages(['/cam']):
                rgb = decode_image_message(bag.deserialize(message), message.msgtype)
                assert rgb[0, 0, 0] == count % 256
                count += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return count, peak


@pytest.mark.parametrize('storage', STORAGES)
def test_reading_streams_with_bounded_memory(tmp_path, storage):
    """Peak memory while reading does not grow with the bag: 4x the frames, same peak."""
    store = project_typestore()
    frame = np.zeros((240, 320, 3), np.uint8)
    sizes, peaks = [], []
    for n in (20, 80):
        path = tmp_path / f'bag{n}'
        with BagWriter(path, storage, store) as writer:
            writer.add_topic('/cam', bags.IMAGE_TYPE)
            for i in range(n):
                frame[:] = i % 256
                writer.write('/cam', int((START + i / 10) * 1e9),
                             bags.image_message(store, frame, START + i / 10))
        count, peak = _read_peak(path)
        assert count == n
        sizes.append(sum(p.stat().st_size for p in path.iterdir()))
        peaks.append(peak)
    assert sizes[1] > 3.5 * sizes[0]
    assert peaks[1] < 1.25 * peaks[0] + 0.5e6, f'peaks {peaks} for sizes {sizes}'
    assert peaks[1] < sizes[1] / 4


def _write_video(path: Path, frames: int, fps: float) -> None:
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()


@pytest.mark.parametrize('storage', STORAGES)
def test_make_bag_from_video_images_and_wav(tmp_path, storage):
    """A video, an image folder, a still image and a WAV clip become one correctly timed bag."""
    import cv2

    from emotion_ros.audio.pcm import write_wav
    _write_video(tmp_path / 'clip.avi', frames=20, fps=20.0)  # 1 s, resampled to 10 fps
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f'{i:03d}.png'), np.full((96, 128, 3), 200 + i, np.uint8))
    cv2.imwrite(str(tmp_path / 'still.png'), np.full((48, 64, 3), 77, np.uint8))
    clip = np.zeros(8000, np.float32)
    clip[4000] = 0.9  # a click 0.25 s into the clip
    write_wav(tmp_path / 'click.wav', clip, 16000)
    labels = tmp_path / 'labels.yaml'
    labels.write_text('persons: []\nepisodes:\n  - {start: 1.0, end: 2.0}\n')
    options = MakeBagOptions(storage=storage, fps=10.0, start_time=START, compressed=False)
    out = tmp_path / 'made'
    camera = [str(tmp_path / 'clip.avi'), str(folder), f"{tmp_path / 'still.png'}@0.5"]
    info = make_bag(out, camera, [f"{tmp_path / 'click.wav'}@1.5"], labels, options)
    assert (out / 'labels.yaml').read_text() == labels.read_text()
    # 10 frames of video + 3 images + 5 still frames = 18 frames = 1.8 s of camera.
    assert info.topics['/camera/image_raw'].count == 18
    assert info.topics['/audio'].count == 20  # audio lasts as long as the clip end (2.0 s)
    assert info.storage == storage
    with BagReader(out) as bag:
        values, stamps = [], []
        for message in bag.messages(['/camera/image_raw']):
            msg = bag.deserialize(message)
            rgb = decode_image_message(msg, message.msgtype)
            assert rgb.shape == (48, 64, 3)  # every frame fitted to the first one's size
            values.append(int(round(rgb.mean())))
            stamps.append(bags.stamp_seconds(msg.header) - START)
        np.testing.assert_allclose(stamps, np.arange(18) / 10, atol=1e-6)
        # Video resampled by time: every other frame of the 20 fps clip (MJPG is lossy).
        assert all(abs(v - 20 * k) <= 3 for k, v in enumerate(values[:10]))
        assert [abs(v - e) <= 1 for v, e in zip(values[10:13], (200, 201, 202))] == [True] * 3
        assert values[13:] == [77] * 5
        audio = []
        for message in bag.messages(['/audio']):
            samples, rate, _ = AudioDecoder().decode(bag.deserialize(message), message.msgtype,
                                                     message.log_time)
            audio.append(samples)
        audio = np.concatenate(audio)
        assert rate == 16000 and len(audio) == 32000
        assert int(np.argmax(np.abs(audio))) == int(1.75 * 16000)


def test_make_bag_camera_noise_varies_every_frame_around_the_scene(tmp_path):
    """With camera_noise each frame of a still scene differs from the one before by about
    the requested sigma, stays centred on the scene, and the same seed gives the same bag;
    without it a still scene's frames are identical. A bad sigma is refused by name."""
    import cv2
    scene = np.random.default_rng(3).integers(40, 216, (48, 64, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'still.png'), scene)

    def frames(name, sigma, seed=0):
        options = MakeBagOptions(fps=10.0, start_time=START, camera_noise=sigma, seed=seed)
        make_bag(tmp_path / name, [f"{tmp_path / 'still.png'}@1"], options=options)
        with BagReader(tmp_path / name) as bag:
            return [decode_image_message(bag.deserialize(m), m.msgtype).astype(np.float64)
                    for m in bag.messages(['/camera/image_raw'])]

    for sigma in (1.0, 3.0, 6.0):
        noisy = frames(f'n{sigma:g}', sigma)
        assert len(noisy) == 10
        for a, b in zip(noisy, noisy[1:]):
            # The difference of two independent draws has sigma * sqrt(2).
            assert abs(np.std(a - b) / (sigma * np.sqrt(2)) - 1) < 0.15
        assert abs(np.mean(noisy) - np.mean(scene)) < 0.2
    same = frames('again', 3.0)
    assert all(np.array_equal(a, b) for a, b in zip(same, frames('again2', 3.0)))
    assert not np.array_equal(frames('other_seed', 3.0, seed=1)[0], same[0])
    still = frames('still', 0.0)
    assert all(np.array_equal(f, still[0]) for f in still)
    with pytest.raises(InputError, match='camera noise'):
        make_bag(tmp_path / 'bad', [f"{tmp_path / 'still.png'}@1"],
                 options=MakeBagOptions(camera_noise=-1.0))


def test_make_bag_rejects_bad_inputs_and_leaves_nothing(tmp_path):
    """Missing media, an existing output and labels outside the bag fail with clear errors."""
    import cv2
    cv2.imwrite(str(tmp_path / 'still.png'), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match='not found'):
        make_bag(tmp_path / 'a', [str(tmp_path / 'missing.mp4')])
    with pytest.raises(InputError, match='WAV file not found'):
        make_bag(tmp_path / 'a', [], [str(tmp_path / 'missing.wav')])
    (tmp_path / 'exists').mkdir()
    with pytest.raises(InputError, match='never overwritten'):
        make_bag(tmp_path / 'exists', [str(tmp_path / 'still.png')])
    labels = tmp_path / 'late.yaml'
    labels.write_text('episodes:\n  - {start: 30.0, end: 31.0}\n')
    with pytest.raises(InputError, match='outside the bag'):
        make_bag(tmp_path / 'b', [f"{tmp_path / 'still.png'}@1"], labels=labels)
    assert not (tmp_path / 'b').exists()
    with pytest.raises(InputError, match='fps'):
        make_bag(tmp_path / 'c', [str(tmp_path / 'still.png')], options=MakeBagOptions(fps=0))


def test_bag_info_and_make_bag_commands(tmp_path, capsys):
    """`emotion-ros make-bag` writes a bag and `bag-info` describes it (text and JSON)."""
    import cv2

    from emotion_ros.evaluation.cli import main
    cv2.imwrite(str(tmp_path / 'still.png'), np.zeros((48, 64, 3), np.uint8))
    out = tmp_path / 'cli_bag'
    assert main(['make-bag', str(out), '--camera', f"{tmp_path / 'still.png'}@2",
                 '--storage', 'mcap', '--compressed', '--fps', '5', '--no-progress',
                 '--noise-dbfs', '-50', '--start-time', str(START)]) == 0
    capsys.readouterr()
    assert main(['bag-info', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'mcap' in text and 'sensor_msgs/msg/CompressedImage' in text and '/audio' in text
    assert main(['bag-info', str(out), '--json']) == 0
    data = json.loads(capsys.readouterr().out)
    assert data['topics']['/camera/image_raw']['count'] == 10
    assert data['start_ns'] == int(START * 1e9)
    assert main(['bag-info', str(tmp_path / 'missing')]) == 1
    assert 'bag not found' in capsys.readouterr().err


def test_bag_modules_do_not_load_ros_or_torch():
    """The bag, evaluation and command modules import without rclpy, message packages or torch."""
    code = ('import sys\n'
            'import emotion_ros.evaluation.bags, emotion_ros.evaluation.bagtools\n'
            'import emotion_ros.evaluation.cli\n'
            'import emotion_ros.evaluation, emotion_ros.evaluation.runner\n'
            'import emotion_ros.evaluation.report, emotion_ros.evaluation.live\n'
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'torch')\n"
            "             or m.endswith('_msgs.msg'))\n"
            'print(bad)\n'
            'sys.exit(1 if bad else 0)\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
