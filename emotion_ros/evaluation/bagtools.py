"""Make labelled test bags from video files, image folders, still images and WAV files.

Teams that cannot record on the robot yet (or want a scripted scenario) turn
media into a rosbag2 bag that looks like a recording: a camera topic
(``sensor_msgs/Image`` or ``CompressedImage``) at a fixed rate and a
microphone topic (``emotion_ros_msgs/AudioFrame``), stamped as a recorder
would, in sqlite3 or mcap storage. A labels file given along is validated
against the bag and stored in it as ``labels.yaml``/``.json``, where
``emotion-ros evaluate`` finds it.

Camera sources play one after another; each is ``PATH`` or ``PATH@SECONDS``:
a video (at most SECONDS of it), a folder of images (one per frame, sorted by
name; at most SECONDS), or a single image (shown for SECONDS, default 1).
WAV clips are ``PATH`` or ``PATH@OFFSET``: placed OFFSET seconds after the
bag start (default: right after the previous clip), mixed where they overlap,
silence (or ``noise_dbfs`` of white noise) elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from emotion_ros.evaluation.bags import (AUDIO_FRAME_TYPE, audio_frame_message, BagInfo, BagReader,
                                         BagWriter, CAMERA_INFO_TYPE, camera_info_message,
                                         COMPRESSED_IMAGE_TYPE, compressed_image_message,
                                         depth_message, IMAGE_TYPE, image_message, pinhole_k,
                                         project_typestore, STORAGE_FORMATS)
from emotion_ros.errors import InputError

log = logging.getLogger('emotion_ros.evaluation.bagtools')

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.mpg', '.mpeg', '.m4v')
PathLike = Union[str, 'os.PathLike[str]']


def _split_at(spec: str) -> Tuple[str, Optional[float]]:
    # 'clip.wav@3.5' -> ('clip.wav', 3.5); a path may itself contain '@'.
    if '@' in spec:
        path, _, tail = spec.rpartition('@')
        try:
            return path, float(tail)
        except ValueError:
            pass
    return spec, None


@dataclasses.dataclass(frozen=True)
class CameraSource:
    """A video file, image folder or still image, with an optional duration."""

    path: Path
    seconds: Optional[float] = None

    @classmethod
    def parse(cls, spec: Union[str, 'CameraSource']) -> 'CameraSource':
        """From ``PATH`` or ``PATH@SECONDS``.

        Raises:
            InputError: ``media_missing`` / ``media_format`` for a missing or
                unsupported source, ``option`` for a non-positive duration.
        """
        if isinstance(spec, CameraSource):
            return spec
        path, seconds = _split_at(str(spec))
        source = cls(Path(path), seconds)
        source.kind  # validates
        if seconds is not None and seconds <= 0:
            raise InputError(f'camera source {spec}: duration must be > 0', kind='option')
        return source

    @property
    def kind(self) -> str:
        """'video', 'folder' or 'image'."""
        if not self.path.exists():
            raise InputError(f'camera source not found: {self.path}', kind='media_missing')
        if self.path.is_dir():
            return 'folder'
        suffix = self.path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return 'image'
        if suffix in VIDEO_SUFFIXES:
            return 'video'
        raise InputError(f'camera source {self.path}: unknown file type {suffix!r} (images: '
                         f'{list(IMAGE_SUFFIXES)}, videos: {list(VIDEO_SUFFIXES)})',
                         kind='media_format')


@dataclasses.dataclass(frozen=True)
class AudioClip:
    """A WAV file placed at an offset (None: after the previous clip)."""

    path: Path
    offset_s: Optional[float] = None

    @classmethod
    def parse(cls, spec: Union[str, 'AudioClip']) -> 'AudioClip':
        """From ``PATH`` or ``PATH@OFFSET``.

        Raises:
            InputError: ``media_missing`` for a missing file, ``option`` for a negative offset.
        """
        if isinstance(spec, AudioClip):
            return spec
        path, offset = _split_at(str(spec))
        if not Path(path).is_file():
            raise InputError(f'WAV file not found: {path}', kind='media_missing')
        if offset is not None and offset < 0:
            raise InputError(f'audio clip {spec}: offset must be >= 0', kind='option')
        return cls(Path(path), offset)


def _read_image(path: Path) -> np.ndarray:
    import cv2
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f'cannot read image {path} (corrupt or unsupported)',
                         kind='media_format')
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _fit(rgb: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
    if size is None or (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    import cv2
    return np.ascontiguousarray(cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA))


def _source_frames(source: CameraSource, fps: float) -> Iterator[np.ndarray]:
    """Frames of one source at ``fps`` (videos are resampled by time)."""
    kind = source.kind
    limit = None if source.seconds is None else max(1, int(round(source.seconds * fps)))
    if kind == 'image':
        rgb = _read_image(source.path)
        for _ in range(limit if limit is not None else int(round(fps))):
            yield rgb
        return
    if kind == 'folder':
        files = sorted(p for p in source.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f'image folder {source.path} holds no images '
                             f'({list(IMAGE_SUFFIXES)})', kind='media_missing')
        for i, path in enumerate(files):
            if limit is not None and i >= limit:
                return
            yield _read_image(path)
        return
    import cv2
    capture = cv2.VideoCapture(str(source.path))
    if not capture.isOpened():
        raise InputError(f'cannot open video {source.path}', kind='media_format')
    try:
        native = capture.get(cv2.CAP_PROP_FPS) or fps
        if not np.isfinite(native) or native <= 0:
            native = fps
        produced = 0
        index = 0
        ok, frame = capture.read()
        if not ok:
            raise InputError(f'video {source.path} has no readable frames', kind='media_format')
        while ok and (limit is None or produced < limit):
            # Emit the video frame shown at each output time (drop or repeat frames).
            wanted = int(produced * native / fps)
            while index < wanted and ok:
                ok, frame = capture.read()
                index += 1
            if not ok:
                break
            yield np.ascontiguousarray(frame[:, :, ::-1])
            produced += 1
    finally:
        capture.release()


def _audio_track(clips: Sequence[AudioClip], rate: int) -> Tuple[List[Tuple[float, np.ndarray]],
                                                                 float]:
    """Resampled mono clips with their start times, and where the last one ends."""
    from emotion_ros.audio.pcm import read_wav
    placed: List[Tuple[float, np.ndarray]] = []
    cursor = 0.0
    for clip in clips:
        samples, clip_rate = read_wav(clip.path)
        mono = samples.mean(axis=1) if samples.ndim == 2 else samples
        if clip_rate != rate:  # the project's one resampler (emotion_ros.audio.features)
            from emotion_ros.audio.features import resample
            mono = resample(mono, int(clip_rate), int(rate))
        start = clip.offset_s if clip.offset_s is not None else cursor
        placed.append((start, np.asarray(mono, np.float32)))
        cursor = start + len(mono) / rate
    end = max((s + len(m) / rate for s, m in placed), default=0.0)
    return placed, end


@dataclasses.dataclass(frozen=True)
class MakeBagOptions:
    """How the bag is written."""

    storage: str = 'sqlite3'
    image_topic: str = '/camera/image_raw'
    audio_topic: str = '/audio'
    frame_id: str = 'camera'
    audio_frame_id: str = 'microphone'
    fps: float = 10.0
    size: Optional[Tuple[int, int]] = None  # (width, height); default: the first frame's
    compressed: bool = False
    jpeg_quality: int = 90
    encoding: str = 'rgb8'
    audio_rate: int = 16000
    audio_chunk_s: float = 0.1
    sample_format: str = 'S16LE'
    noise_dbfs: Optional[float] = None  # white noise under the clips, e.g. -60
    # Gaussian sensor noise added to every frame (sigma in grey levels, 0 = none): a still
    # scene then changes a little from frame to frame, as a real camera's does.
    camera_noise: float = 0.0
    start_time: Optional[float] = None  # ROS time of the first message (default: now)
    min_duration_s: float = 0.0  # pad camera/audio to at least this long
    seed: int = 0
    progress: bool = False
    camera_info: bool = False  # write sensor_msgs/CameraInfo next to every frame
    hfov_deg: float = 60.0  # horizontal field of view of that (ideal pinhole) camera
    depth: bool = False  # write an aligned 16UC1 depth image per frame (from label positions)
    depth_background_m: float = 8.0  # depth of everything that is not a labelled person

    @property
    def camera_info_topic(self) -> str:
        """<image topic's namespace>/camera_info (emotion_ros.ros.graph.camera_topics)."""
        from emotion_ros.ros.graph import camera_topics
        return camera_topics(self.image_topic)[0]

    @property
    def depth_topic(self) -> str:
        """<image topic's namespace>/depth/image_raw: where the perception node started by
        `emotion-ros up` or robot.launch.py looks for it (one description of the topic names:
        emotion_ros.ros.graph.camera_topics)."""
        from emotion_ros.ros.graph import camera_topics
        return camera_topics(self.image_topic)[1]

    def validate(self) -> None:
        """Raise InputError naming the first bad option."""
        if self.storage not in STORAGE_FORMATS:
            raise InputError(f'storage {self.storage!r} is not one of {list(STORAGE_FORMATS)}',
                             kind='option')
        if not self.fps > 0:
            raise InputError(f'fps must be > 0, got {self.fps}', kind='option')
        if not self.audio_chunk_s > 0 or not self.audio_rate > 0:
            raise InputError('audio rate and chunk length must be > 0', kind='option')
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise InputError(f'size must be (width, height) > 0, got {self.size}',
                             kind='option')
        if not 1.0 <= self.hfov_deg <= 179.0:
            raise InputError(f'hfov must be 1-179 degrees, got {self.hfov_deg}', kind='option')
        if not self.depth_background_m > 0:
            raise InputError('depth background must be > 0 m', kind='option')
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f'jpeg quality must be 1-100, got {self.jpeg_quality}',
                             kind='option')
        if not 0.0 <= self.camera_noise <= 64.0:
            raise InputError(f'camera noise must be 0-64 grey levels, got {self.camera_noise}',
                             kind='option')
        for topic in (self.image_topic, self.audio_topic):
            if not topic.startswith('/'):
                raise InputError(f'topic {topic!r} must be absolute (start with /)',
                                 kind='option')


def make_bag(out: PathLike, camera: Sequence[Union[str, CameraSource]] = (),
             audio: Sequence[Union[str, AudioClip]] = (), labels: Optional[PathLike] = None,
             options: MakeBagOptions = MakeBagOptions()) -> BagInfo:
    """Write a new bag from media (and store its labels in it).

    Args:
        out: the bag folder to create (must not exist).
        camera: camera sources played one after another (see module docstring).
        audio: WAV clips (see module docstring).
        labels: a labels file to validate against the bag and store in it.
        options: topics, rates, storage format and encodings.

    Returns:
        What the written bag holds.

    Raises:
        InputError: for missing/unreadable media, bad options, an existing
            ``out``, or labels that do not fit the bag (the half-made bag is removed).
    """
    options.validate()
    out = Path(out)
    sources = [CameraSource.parse(s) for s in camera]
    clips = [AudioClip.parse(c) for c in audio]
    if not sources and not clips:
        raise InputError('nothing to write: give at least one camera source or WAV clip',
                         kind='option')
    parsed_labels = None
    if labels is not None:
        from emotion_ros.evaluation.labels import load_labels
        parsed_labels = load_labels(labels)  # fail before writing anything
    if options.depth and parsed_labels is None:
        raise InputError('--depth renders the labelled persons at their positions: give '
                         '--labels with span positions', kind='option')
    if out.exists():
        raise InputError(f'{out} exists already; a bag is never overwritten', kind='bag_exists')
    start = options.start_time if options.start_time is not None else float(int(time.time()))
    placed, audio_end = _audio_track(clips, options.audio_rate)
    store = project_typestore()
    try:
        with BagWriter(out, options.storage, typestore=store) as writer:
            if sources:
                writer.add_topic(options.image_topic,
                                 COMPRESSED_IMAGE_TYPE if options.compressed else IMAGE_TYPE)
                if options.camera_info or options.depth:
                    writer.add_topic(options.camera_info_topic, CAMERA_INFO_TYPE)
                if options.depth:
                    writer.add_topic(options.depth_topic, IMAGE_TYPE)
            if clips or options.noise_dbfs is not None:
                writer.add_topic(options.audio_topic, AUDIO_FRAME_TYPE)
            bar = None
            if options.progress:
                from tqdm import tqdm
                bar = tqdm(unit='msg', desc=f'make-bag {out.name}')
            # Camera first, then audio: each stream is in time order, which is
            # all the readers need to stream it back with bounded memory; the
            # audio runs as long as the camera, known only after it.
            camera_end = 0.0
            for stamp_ns, topic, msg, end in _with_geometry(
                    _video_messages(sources, options, store, start), options, store, start,
                    parsed_labels):
                writer.write(topic, stamp_ns, msg)
                camera_end = end
                if bar is not None:
                    bar.update(1)
            if clips or options.noise_dbfs is not None:
                length = max(audio_end, camera_end, options.min_duration_s)
                for stamp_ns, topic, msg in _audio_messages(placed, length, options, store,
                                                            start):
                    writer.write(topic, stamp_ns, msg)
                    if bar is not None:
                        bar.update(1)
            if bar is not None:
                bar.close()
        with BagReader(out) as reader:
            info = reader.info
        if parsed_labels is not None:
            parsed_labels.resolve(info.start_s, info.duration_s, tolerance_s=2.0 / options.fps)
            suffix = '.json' if Path(labels).suffix.lower() == '.json' else '.yaml'  # type: ignore
            shutil.copyfile(labels, out / f'labels{suffix}')  # type: ignore[arg-type]
    except BaseException:
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    return info


def _with_geometry(frames: Iterator[Tuple[int, str, Any, float]], options: MakeBagOptions,
                   store: Any, start: float, labels: Any
                   ) -> Iterator[Tuple[int, str, Any, float]]:
    """Each frame, followed by its CameraInfo and depth image when asked for.

    The depth image is what an aligned depth camera would see if the labelled
    persons stood at their labelled positions (z of the span position, in
    metres, over their box) in front of a wall at ``depth_background_m``.
    """
    if labels is not None and labels.time == 'absolute':
        labels = labels.shifted(start)
    for stamp_ns, topic, msg, end in frames:
        if not (options.camera_info or options.depth):
            yield stamp_ns, topic, msg, end
            continue
        stamp = stamp_ns * 1e-9
        width, height = int(getattr(msg, 'width', 0)), int(getattr(msg, 'height', 0))
        if not width and options.size is not None:
            width, height = options.size  # CompressedImage carries no size
        if topic != options.image_topic or not width:
            yield stamp_ns, topic, msg, end
            continue
        frame_id = options.frame_id
        # Geometry first: a reader that takes the latest CameraInfo/depth for each image
        # finds those of the same instant.
        k = pinhole_k(width, height, options.hfov_deg)
        yield stamp_ns, options.camera_info_topic, camera_info_message(
            store, width, height, k, stamp, frame_id), end
        if options.depth:
            depth = np.full((height, width), options.depth_background_m, np.float32)
            for person in sorted(labels.visible_at(stamp - start),
                                 key=lambda v: -(v.position[2] if v.position else 0)):
                if person.position is None:
                    continue
                x0, y0, x1, y1 = (int(round(v)) for v in person.box)
                depth[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = person.position[2]
            yield stamp_ns, options.depth_topic, depth_message(store, depth, stamp,
                                                               frame_id), end
        yield stamp_ns, topic, msg, end


def _video_messages(sources: Sequence[CameraSource], options: MakeBagOptions, store: Any,
                    start: float) -> Iterator[Tuple[int, str, Any, float]]:
    """(stamp ns, topic, message, camera time covered so far) per frame."""
    size = options.size
    index = 0
    rgb = None

    rng = np.random.default_rng(options.seed + 1)  # another stream than the audio noise's

    def message(frame: np.ndarray, stamp: float) -> Any:
        if options.camera_noise > 0:
            grain = rng.normal(0.0, options.camera_noise, frame.shape).astype(np.float32)
            noisy = frame.astype(np.float32) + grain
            frame = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if options.compressed:
            return compressed_image_message(store, frame, stamp, options.frame_id,
                                            options.jpeg_quality)
        return image_message(store, frame, stamp, options.frame_id, options.encoding)

    for source in sources:
        for rgb in _source_frames(source, options.fps):
            if size is None:
                size = (int(rgb.shape[1]), int(rgb.shape[0]))
            rgb = _fit(rgb, size)
            stamp = start + index / options.fps
            index += 1
            yield int(round(stamp * 1e9)), options.image_topic, message(rgb, stamp), \
                index / options.fps
    # Hold the last frame when the bag must be longer than the camera sources.
    while rgb is not None and index / options.fps < options.min_duration_s - 1e-9:
        stamp = start + index / options.fps
        index += 1
        yield int(round(stamp * 1e9)), options.image_topic, message(rgb, stamp), \
            index / options.fps


def _audio_messages(placed: Sequence[Tuple[float, np.ndarray]], length_s: float,
                    options: MakeBagOptions, store: Any, start: float
                    ) -> Iterator[Tuple[int, str, Any]]:
    """(stamp ns, topic, message) per audio chunk, clips mixed in, ``length_s`` long."""
    rate = options.audio_rate
    chunk = max(1, int(round(options.audio_chunk_s * rate)))
    rng = np.random.default_rng(options.seed)
    noise = None if options.noise_dbfs is None else 10 ** (options.noise_dbfs / 20.0)
    first = 0
    while first / rate < length_s - 1e-9:
        buf = np.zeros(chunk, np.float32)
        if noise is not None:
            buf += (rng.standard_normal(chunk) * noise).astype(np.float32)
        for clip_start, samples in placed:
            offset = int(round(clip_start * rate))
            lo, hi = max(first, offset), min(first + chunk, offset + len(samples))
            if lo < hi:
                buf[lo - first:hi - first] += samples[lo - offset:hi - offset]
        np.clip(buf, -1.0, 1.0, out=buf)
        stamp = start + first / rate
        yield int(round(stamp * 1e9)), options.audio_topic, audio_frame_message(
            store, buf, rate, stamp, options.audio_frame_id, options.sample_format)
        first += chunk


def format_bag_info(info: BagInfo) -> str:
    """Describe a bag for people (the ``bag-info`` command's output)."""
    import datetime
    start = datetime.datetime.fromtimestamp(info.start_s, datetime.timezone.utc)
    lines = [f'Bag:        {info.path}' + ('  (recovered: no metadata.yaml)'
                                           if info.recovered else ''),
             f'Storage:    {info.storage}',
             f'Size:       {info.size_bytes / 1e6:.1f} MB',
             f'Duration:   {info.duration_s:.3f} s',
             f'Start:      {start.isoformat()} ({info.start_s:.3f})',
             f'Messages:   {info.message_count}',
             'Topics:']
    width = max([len(t.name) for t in info.topics.values()] + [5])
    tw = max([len(t.msgtype) for t in info.topics.values()] + [4])
    for topic in sorted(info.topics.values(), key=lambda t: t.name):
        rate = topic.count / info.duration_s if info.duration_s > 0 else 0.0
        lines.append(f'  {topic.name:<{width}}  {topic.msgtype:<{tw}}  {topic.count:>8} msgs'
                     f'  {rate:7.2f} Hz')
    labels = [p.name for p in Path(info.path).glob('labels.*')] if Path(info.path).is_dir() \
        else []
    if labels:
        lines.append(f'Labels:     {labels[0]}')
    return '\n'.join(lines)
