"""Read and write rosbag2 bags (sqlite3 and mcap) without ROS, with the pure-Python rosbags.

Reading streams messages in time order, one at a time, so memory stays
bounded on bags larger than RAM. Each bag gets its own type store: the
message definitions the bag carries come first (so types we do not have
installed, such as ``audio_common_msgs``, decode exactly as recorded), then
ROS 2 Kilted's standard types, then this package's own ``emotion_ros_msgs``.
Every failure (missing, truncated or corrupt bag, unknown topic) is an
:class:`~emotion_ros.errors.InputError` that names what was wrong.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from emotion_ros.errors import EmotionRosError, InputError

PathLike = Union[str, 'os.PathLike[str]']

STORAGE_FORMATS: Tuple[str, ...] = ('sqlite3', 'mcap')
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES: Tuple[str, ...] = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
AUDIO_FRAME_TYPE = 'emotion_ros_msgs/msg/AudioFrame'
# audio_common (ros-drivers, ROS 2 branch): AudioData carries bytes only, the
# format travels on a separate AudioInfo topic; AudioDataStamped adds a header.
# audio_common (mgonzs13): AudioStamped/Audio carry typed arrays and their info.
AUDIO_COMMON_TYPES: Tuple[str, ...] = (
    'audio_common_msgs/msg/AudioData',
    'audio_common_msgs/msg/AudioDataStamped',
    'audio_common_msgs/msg/AudioStamped',
    'audio_common_msgs/msg/Audio',
)
AUDIO_TYPES: Tuple[str, ...] = (AUDIO_FRAME_TYPE,) + AUDIO_COMMON_TYPES
AUDIO_INFO_TYPE = 'audio_common_msgs/msg/AudioInfo'
MSGS_PACKAGE = 'emotion_ros_msgs'


def find_msg_dir() -> Path:
    """Locate the ``.msg`` files of emotion_ros_msgs.

    Looks, in order, in ``$EMOTION_ROS_ROOT/emotion_ros_msgs/msg``, in the
    package's share folder on ``AMENT_PREFIX_PATH`` (an installed workspace),
    and next to this source tree.

    Raises:
        EmotionRosError: when none of these holds the message files.
    """
    candidates: List[Path] = []
    root = os.environ.get('EMOTION_ROS_ROOT')
    if root:
        candidates.append(Path(root) / MSGS_PACKAGE / 'msg')
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / 'share' / MSGS_PACKAGE / 'msg')
    candidates.append(Path(__file__).resolve().parents[1] / MSGS_PACKAGE / 'msg')
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob('*.msg')):
            return candidate
    raise EmotionRosError(
        f'cannot find the {MSGS_PACKAGE} message definitions; looked in '
        f'{[str(c) for c in candidates]}. Set EMOTION_ROS_ROOT to the repository root or '
        f'source the workspace that installs {MSGS_PACKAGE}.')


@functools.lru_cache(maxsize=1)
def _base_types() -> Dict[str, Any]:
    # Kilted's standard types plus ours, parsed once per process.
    from rosbags.typesys import get_typestore, get_types_from_msg, Stores
    store = get_typestore(Stores.ROS2_KILTED)
    types: Dict[str, Any] = dict(store.fielddefs)
    msg_dir = find_msg_dir()
    for path in sorted(msg_dir.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(encoding='utf-8'),
                                        f'{MSGS_PACKAGE}/msg/{path.stem}'))
    return types


def project_typestore(extra: Optional[Dict[str, Any]] = None) -> Any:
    """Build a rosbags type store with Kilted's standard types and emotion_ros_msgs.

    Args:
        extra: more parsed definitions (``rosbags`` typesdict); these take
            precedence over the standard ones of the same name.

    Raises:
        InputError: when ``extra`` definitions are not parseable together.
    """
    from rosbags.typesys import get_typestore, Stores, TypesysError
    store = get_typestore(Stores.EMPTY)
    try:
        if extra:
            store.register(dict(extra))
        store.register({k: v for k, v in _base_types().items() if k not in store.fielddefs})
    except TypesysError as exc:
        raise InputError(f'message definitions do not fit together: {exc}',
                         kind='bag_msgdef') from exc
    return store


def _parse_definition(msgtype: str, fmt: str, text: str) -> Dict[str, Any]:
    from rosbags.typesys import get_types_from_idl, get_types_from_msg
    if fmt == 'IDL':
        return dict(get_types_from_idl(text))
    return dict(get_types_from_msg(text, msgtype))


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag."""

    name: str
    msgtype: str
    count: int


@dataclasses.dataclass(frozen=True)
class BagInfo:
    """What a bag holds."""

    path: str
    storage: str
    start_ns: int
    end_ns: int
    message_count: int
    topics: Dict[str, TopicInfo]
    size_bytes: int
    recovered: bool = False  # opened from a storage file without metadata.yaml

    @property
    def duration_s(self) -> float:
        """Time from the first to the last message in seconds."""
        return max(self.end_ns - self.start_ns, 0) / 1e9

    @property
    def start_s(self) -> float:
        """Receive time of the first message in seconds."""
        return self.start_ns / 1e9

    def describe_topics(self) -> str:
        """Describe the topics as ``'/a (sensor_msgs/msg/Image, 10 msgs), ...'``."""
        if not self.topics:
            return '(none)'
        return ', '.join(f'{t.name} ({t.msgtype}, {t.count} msgs)'
                         for t in sorted(self.topics.values(), key=lambda t: t.name))


@dataclasses.dataclass
class BagMessage:
    """One serialized message as stored: topic, type, receive time and CDR bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: Union[bytes, memoryview]

    @property
    def log_time(self) -> float:
        """Receive time in seconds."""
        return self.log_time_ns / 1e9


def _storage_files(path: Path) -> List[Path]:
    return sorted(p for p in path.iterdir() if p.suffix in ('.db3', '.mcap')) \
        if path.is_dir() else []


def _dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


class BagReader:
    """Streams messages from a rosbag2 bag (folder with metadata.yaml, or a .db3/.mcap file).

    Use as a context manager::

        with BagReader('mission_01') as bag:
            bag.require_topic('/camera/image_raw', IMAGE_TYPES)
            for message in bag.messages(['/camera/image_raw']):
                image = bag.deserialize(message)
    """

    def __init__(self, path: PathLike) -> None:
        """Check that ``path`` looks like a bag; open it with ``open()`` or ``with``.

        Raises:
            InputError: ``bag_missing`` when nothing is at ``path`` or it holds no bag.
        """
        self.path = Path(path)
        self._reader: Any = None
        self._typestore: Any = None
        self._info: Optional[BagInfo] = None
        self._connections: List[Any] = []
        self._recovered = False
        if not self.path.exists():
            raise InputError(f'bag not found: {self.path}', kind='bag_missing')
        if self.path.is_dir() and not (self.path / 'metadata.yaml').exists():
            files = _storage_files(self.path)
            if len(files) != 1:
                raise InputError(
                    f'{self.path} is not a rosbag2 bag: no metadata.yaml and '
                    f'{len(files)} .db3/.mcap files (expected one to recover from)',
                    kind='bag_missing')
            # A recording that was killed has no metadata.yaml; its storage file
            # still holds every message written before the crash.
            self._open_path = files[0]
            self._recovered = True
        elif self.path.is_file() and self.path.suffix not in ('.db3', '.mcap'):
            raise InputError(f'{self.path} is not a rosbag2 bag (expected a folder with '
                             'metadata.yaml, or a .db3/.mcap file)', kind='bag_missing')
        else:
            self._open_path = self.path

    # ------------------------------------------------------------------ open
    def open(self) -> 'BagReader':
        """Open the bag and build its type store.

        Raises:
            InputError: ``bag_corrupt`` when the bag cannot be read (truncated,
                corrupt, unsupported), naming the file and the cause.
        """
        from rosbags.rosbag2 import Reader, ReaderError
        try:
            reader = Reader(self._open_path)
            reader.open()
        except (ReaderError, sqlite3.Error, OSError, KeyError, ValueError, EOFError,
                IndexError, AssertionError) as exc:
            raise InputError(self._corrupt_message(exc), kind='bag_corrupt') from exc
        except Exception as exc:  # apsw and struct errors have no common base
            raise InputError(self._corrupt_message(exc), kind='bag_corrupt') from exc
        self._reader = reader
        try:
            self._connections = list(reader.connections)
            self._typestore = self._build_typestore(self._connections)
            topics: Dict[str, TopicInfo] = {}
            for conn in self._connections:
                old = topics.get(conn.topic)
                count = conn.msgcount + (old.count if old else 0)
                topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count)
            count = reader.message_count
            start = reader.start_time if count else 0
            end = reader.end_time - 1 if count else 0
            self._info = BagInfo(
                path=str(self.path), storage=self._storage_id(), start_ns=int(start),
                end_ns=int(end), message_count=int(count), topics=topics,
                size_bytes=_dir_size(self.path), recovered=self._recovered)
        except BaseException:
            self.close()
            raise
        return self

    def _storage_id(self) -> str:
        if self._open_path.is_dir():
            files = _storage_files(self._open_path)
            suffix = files[0].suffix if files else ''
        else:
            suffix = self._open_path.suffix
        return {'.db3': 'sqlite3', '.mcap': 'mcap'}.get(suffix, suffix.lstrip('.'))

    def _corrupt_message(self, exc: BaseException) -> str:
        detail = str(exc) or type(exc).__name__
        return (f'cannot read bag {self.path}: {detail} (the bag is truncated or corrupt, or '
                'not a rosbag2 sqlite3/mcap bag)')

    @staticmethod
    def _build_typestore(connections: Sequence[Any]) -> Any:
        from rosbags.interfaces import MessageDefinitionFormat
        extra: Dict[str, Any] = {}
        for conn in connections:
            msgdef = conn.msgdef
            if msgdef.format == MessageDefinitionFormat.NONE or not msgdef.data:
                continue
            fmt = 'IDL' if msgdef.format == MessageDefinitionFormat.IDL else 'MSG'
            try:
                parsed = _parse_definition(conn.msgtype, fmt, msgdef.data)
            except Exception as exc:  # a definition we cannot parse: fall back on ours
                if conn.msgtype in _base_types():
                    continue
                raise InputError(f"topic {conn.topic}: cannot parse the bag's definition of "
                                 f'{conn.msgtype}: {exc}', kind='bag_msgdef') from exc
            for name, value in parsed.items():
                extra.setdefault(name, value)
        return project_typestore(extra)

    def close(self) -> None:
        """Close the bag. Safe to call twice."""
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:  # closing a half-opened reader must not hide the first error
                pass

    def __enter__(self) -> 'BagReader':
        """Open the bag."""
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        """Close the bag."""
        self.close()

    # ------------------------------------------------------------- metadata
    def _check_open(self) -> None:
        if self._reader is None or self._info is None:
            raise EmotionRosError(f'bag {self.path} is not open')

    @property
    def info(self) -> BagInfo:
        """Storage, time range and topics of the open bag."""
        self._check_open()
        assert self._info is not None
        return self._info

    @property
    def typestore(self) -> Any:
        """The rosbags type store that decodes this bag's messages."""
        self._check_open()
        return self._typestore

    def topics_of_type(self, msgtypes: Iterable[str]) -> List[TopicInfo]:
        """Topics whose type is one of ``msgtypes``, sorted by name."""
        wanted = set(msgtypes)
        return sorted((t for t in self.info.topics.values() if t.msgtype in wanted),
                      key=lambda t: t.name)

    def require_topic(self, topic: str, msgtypes: Optional[Sequence[str]] = None) -> TopicInfo:
        """Check that ``topic`` is in the bag (and of one of ``msgtypes``).

        Raises:
            InputError: ``bag_topic`` naming the topic and listing the topics the bag has.
        """
        info = self.info
        found = info.topics.get(topic)
        if found is None:
            raise InputError(f'topic {topic!r} is not in bag {self.path}; it has: '
                             f'{info.describe_topics()}', kind='bag_topic')
        if msgtypes and found.msgtype not in msgtypes:
            raise InputError(f'topic {topic!r} in bag {self.path} has type {found.msgtype}, '
                             f'expected one of {list(msgtypes)}', kind='bag_topic')
        return found

    def definition(self, msgtype: str) -> str:
        """Return the definition text of ``msgtype`` (the bag's own, else generated)."""
        self._check_open()
        for conn in self._connections:
            if conn.msgtype == msgtype and conn.msgdef.data:
                return str(conn.msgdef.data)
        text, _ = self._typestore.generate_msgdef(msgtype, ros_version=2)
        return str(text)

    # ------------------------------------------------------------- messages
    def messages(self, topics: Optional[Iterable[str]] = None, start_ns: Optional[int] = None,
                 stop_ns: Optional[int] = None) -> Iterator[BagMessage]:
        """Stream serialized messages in receive-time order.

        Args:
            topics: topics to read (all when None); each must be in the bag.
            start_ns: first receive time to include (ns).
            stop_ns: receive time to stop before (ns).

        Raises:
            InputError: ``bag_topic`` for a topic not in the bag; ``bag_corrupt``
                when the data ends early or is damaged (after yielding what was readable).
        """
        self._check_open()
        if topics is None:
            conns = list(self._connections)
        else:
            names = list(dict.fromkeys(topics))
            for name in names:
                self.require_topic(name)
            conns = [c for c in self._connections if c.topic in names]
        if not conns:
            return
        iterator = self._reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, stamp, data = next(iterator)
            except StopIteration:
                return
            except InputError:
                raise
            except Exception as exc:  # truncated chunks/pages surface mid-stream
                raise InputError(self._corrupt_message(exc), kind='bag_corrupt') from exc
            yield BagMessage(conn.topic, conn.msgtype, int(stamp), data)

    def deserialize(self, message: BagMessage) -> Any:
        """Decode a message's CDR bytes with the bag's type store.

        Raises:
            InputError: ``bag_corrupt`` when the bytes do not decode as the topic's type.
        """
        self._check_open()
        try:
            return self._typestore.deserialize_cdr(message.data, message.msgtype)
        except Exception as exc:
            raise InputError(
                f'message on {message.topic} at {message.log_time:.6f} s does not decode as '
                f'{message.msgtype}: {exc}', kind='bag_corrupt') from exc


class BagWriter:
    """Writes a new rosbag2 bag (sqlite3 or mcap); never overwrites an existing path.

    Use as a context manager; on an exception the bag is still closed so what
    was written so far stays readable.
    """

    def __init__(self, path: PathLike, storage: str = 'sqlite3',
                 typestore: Optional[Any] = None) -> None:
        """Prepare a writer for ``path`` in ``storage`` format ('sqlite3' or 'mcap').

        Raises:
            InputError: ``bag_exists`` when ``path`` exists; ``bag_storage`` for an
                unknown storage format.
        """
        if storage not in STORAGE_FORMATS:
            raise InputError(f'unknown bag storage {storage!r}; use one of '
                             f'{list(STORAGE_FORMATS)}', kind='bag_storage')
        self.path = Path(path)
        if self.path.exists():
            raise InputError(f'{self.path} exists already; a bag is never overwritten '
                             '(choose another path or delete it)', kind='bag_exists')
        self.storage = storage
        self.typestore = typestore if typestore is not None else project_typestore()
        self._writer: Any = None
        self._connections: Dict[str, Any] = {}
        self._types: Dict[str, str] = {}

    def open(self) -> 'BagWriter':
        """Create the bag folder and its storage file."""
        from rosbags.rosbag2 import StoragePlugin, Writer
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        return self

    def add_topic(self, topic: str, msgtype: str, msgdef: Optional[str] = None,
                  rihs01: Optional[str] = None) -> None:
        """Declare a topic before writing to it.

        Args:
            topic: topic name (absolute, e.g. ``/camera/image_raw``).
            msgtype: ``pkg/msg/Type``.
            msgdef: definition text to store (default: generated from the type store).
            rihs01: type hash to store with ``msgdef``.

        Raises:
            InputError: ``bag_type`` when ``msgtype`` is unknown to the type store.
        """
        if self._writer is None:
            raise EmotionRosError(f'bag writer for {self.path} is not open')
        if msgtype not in self.typestore.types:
            raise InputError(f'unknown message type {msgtype!r}', kind='bag_type')
        if topic in self._connections:
            if self._types[topic] != msgtype:
                raise InputError(f'topic {topic} already declared as {self._types[topic]}',
                                 kind='bag_type')
            return
        if msgdef is None or rihs01 is None:
            msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
            rihs01 = self.typestore.hash_rihs01(msgtype)
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, msgdef=msgdef, rihs01=rihs01)
        self._types[topic] = msgtype

    def write(self, topic: str, log_time_ns: int, message: Any) -> None:
        """Serialize ``message`` (a type-store instance) and store it at ``log_time_ns``."""
        data = self.typestore.serialize_cdr(message, self._types[topic])
        self.write_raw(topic, log_time_ns, data)

    def write_raw(self, topic: str, log_time_ns: int, data: Union[bytes, memoryview]) -> None:
        """Store already serialized CDR bytes.

        Raises:
            InputError: ``bag_topic`` when the topic was not declared.
        """
        conn = self._connections.get(topic)
        if conn is None:
            raise InputError(f'topic {topic} was not declared with add_topic()',
                             kind='bag_topic')
        self._writer.write(conn, int(log_time_ns), data)

    def close(self) -> None:
        """Finish the storage file and write metadata.yaml. Safe to call twice."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def __enter__(self) -> 'BagWriter':
        """Open the bag for writing."""
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        """Close the bag (also after an error, keeping what was written)."""
        self.close()


# ---------------------------------------------------------------- messages
def to_time(typestore: Any, seconds: float) -> Any:
    """Make a ``builtin_interfaces/msg/Time`` of ``seconds`` (rounded to the nanosecond)."""
    ns = int(round(seconds * 1e9))
    return typestore.types['builtin_interfaces/msg/Time'](sec=ns // 10**9,
                                                          nanosec=ns % 10**9)


def stamp_seconds(header: Any) -> float:
    """Seconds of a message header's stamp."""
    return int(header.stamp.sec) + int(header.stamp.nanosec) * 1e-9


def make_header(typestore: Any, seconds: float, frame_id: str = '') -> Any:
    """Make a ``std_msgs/msg/Header``."""
    return typestore.types['std_msgs/msg/Header'](stamp=to_time(typestore, seconds),
                                                  frame_id=frame_id)


def image_message(typestore: Any, rgb: np.ndarray, seconds: float, frame_id: str = 'camera',
                  encoding: str = 'rgb8') -> Any:
    """Make a ``sensor_msgs/msg/Image`` holding an RGB uint8 image in ``encoding``."""
    from emotion_ros.perception.image_codec import encode_image
    height, width, step, data = encode_image(rgb, encoding)
    return typestore.types[IMAGE_TYPE](
        header=make_header(typestore, seconds, frame_id), height=int(height), width=int(width),
        encoding=encoding, is_bigendian=0, step=int(step),
        data=np.frombuffer(data, dtype=np.uint8))


def compressed_image_message(typestore: Any, rgb: np.ndarray, seconds: float,
                             frame_id: str = 'camera', quality: int = 85) -> Any:
    """Make a ``sensor_msgs/msg/CompressedImage`` with a JPEG of an RGB uint8 image."""
    from emotion_ros.perception.image_codec import encode_jpeg
    data = encode_jpeg(rgb, quality=quality)
    return typestore.types[COMPRESSED_IMAGE_TYPE](
        header=make_header(typestore, seconds, frame_id), format='jpeg',
        data=np.frombuffer(data, dtype=np.uint8))


def audio_frame_message(typestore: Any, samples: np.ndarray, sample_rate: int, seconds: float,
                        frame_id: str = 'microphone', sample_format: str = 'S16LE') -> Any:
    """Make an ``emotion_ros_msgs/msg/AudioFrame``; ``samples`` float (n,) or (n, channels)."""
    from emotion_ros.audio.pcm import encode_pcm
    samples = np.asarray(samples, dtype=np.float32)
    channels = 1 if samples.ndim == 1 else int(samples.shape[1])
    data = encode_pcm(samples, sample_format)
    return typestore.types[AUDIO_FRAME_TYPE](
        header=make_header(typestore, seconds, frame_id), sample_rate=int(sample_rate),
        channels=channels, sample_format=sample_format,
        data=np.frombuffer(data, dtype=np.uint8))


CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'


def pinhole_k(width: int, height: int, hfov_deg: float) -> Tuple[float, ...]:
    """Row-major K of an ideal pinhole camera with the given horizontal field of view."""
    import math
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return (fx, 0.0, (width - 1) / 2.0, 0.0, fx, (height - 1) / 2.0, 0.0, 0.0, 1.0)


def camera_info_message(typestore: Any, width: int, height: int, k: Sequence[float],
                        seconds: float, frame_id: str = 'camera') -> Any:
    """Make a ``sensor_msgs/msg/CameraInfo`` of an undistorted camera with intrinsics ``k``."""
    kk = np.asarray(k, np.float64)
    p = np.array([kk[0], 0.0, kk[2], 0.0, 0.0, kk[4], kk[5], 0.0, 0.0, 0.0, 1.0, 0.0])
    roi = typestore.types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return typestore.types[CAMERA_INFO_TYPE](
        header=make_header(typestore, seconds, frame_id), height=int(height), width=int(width),
        distortion_model='plumb_bob', d=np.zeros(5, np.float64), k=kk,
        r=np.eye(3, dtype=np.float64).ravel(), p=p, binning_x=0, binning_y=0, roi=roi)


def depth_message(typestore: Any, depth_m: np.ndarray, seconds: float,
                  frame_id: str = 'camera') -> Any:
    """Make a 16UC1 (millimetres, 0 = invalid) ``sensor_msgs/msg/Image`` of a depth map."""
    mm = np.nan_to_num(np.asarray(depth_m, np.float64) * 1000.0, nan=0.0)
    mm = np.clip(np.round(mm), 0, 65535).astype('<u2')
    height, width = mm.shape
    return typestore.types[IMAGE_TYPE](
        header=make_header(typestore, seconds, frame_id), height=int(height), width=int(width),
        encoding='16UC1', is_bigendian=0, step=int(width * 2),
        data=np.frombuffer(mm.tobytes(), dtype=np.uint8))
