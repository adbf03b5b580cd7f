"""bag_player: publish a rosbag2 bag into a live graph with its original timing.

For machines without ``ros2 bag`` (the PyPI ROS install has none). Reads the
bag with rosbags (sqlite3 or mcap) and publishes each message's stored CDR
bytes as they are (``Publisher.publish(bytes)``, no decoding), paced by the
bag's receive times divided by ``rate``. Header stamps are rewritten to the replay
time (``restamp``, on by default): each message's ``header.stamp`` moves by the same
offset as its receive time (the first message plays "now"; with ``rate`` the offsets
are scaled), so the graph sees the stamps a live camera and microphone would give:
``alert_latency_ms`` in distress_node's /diagnostics and incident times are
meaningful, and a looped or replayed bag does not step the clock back. With
``--no-restamp`` (or ``clock``, for ``use_sim_time`` nodes) the recorded stamps go
out unchanged. Usage::

    bag_player BAG [--rate 2] [--loop] [--start-offset 5] [--topics /cam /audio]
               [--remap /cam:=/camera/image_raw] [--clock] [--no-restamp]
               [--ros-args ...]

or ``bag_player --ros-args -p bag:=BAG -p rate:=2.0`` (parameters; command-line
flags take precedence). ROS remapping (``--ros-args -r /cam:=/camera``)
works too. Without ``--loop`` the node exits when the bag is done (exit code 0),
or with exit code 1 and the reason when playing fails part-way (e.g. a
truncated bag); /diagnostics show progress and, after a failure, ERROR.
Parameters are read-only at run time (they describe one playback).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rclpy.node import Node
from rclpy.parameter import Parameter

from emotion_ros.evaluation.bags import BagReader
from emotion_ros.config.schema import field
from emotion_ros.errors import ConfigError, InputError
from emotion_ros.ros.diagnostics import Diagnostics
from emotion_ros.ros.health import boundary, describe_error, NodeHealth
from emotion_ros.ros.params import declare_config
from emotion_ros.ros.qos import reliability_qos


@dataclasses.dataclass(frozen=True)
class BagPlayerConfig:
    """Parameters of bag_player."""

    bag: str = field('', 'Bag to play: a rosbag2 folder, or a .db3/.mcap file.')
    rate: float = field(1.0, 'Playback speed factor (2.0: twice as fast as recorded).',
                        positive=True)
    loop: bool = field(False, 'Start over when the bag ends (otherwise the node exits).')
    start_offset: float = field(0.0, 'Skip this many seconds at the start of the bag.',
                                min=0.0)
    topics: Tuple[str, ...] = field((), 'Topics to play (empty: every topic of the bag).')
    remap: Tuple[str, ...] = field(
        (), "Topic renames 'from:=to' applied when publishing (ROS -r remapping also works).")
    reliability: str = field('reliable', 'QoS reliability of the publishers.',
                             choices=('reliable', 'best_effort'))
    qos_depth: int = field(100, 'QoS history depth of the publishers.', min=1, max=10000)
    clock: bool = field(False, 'Publish the bag time on /clock (for use_sim_time nodes); the '
                        'recorded header stamps are kept (restamp is ignored).')
    restamp: bool = field(
        True, 'Rewrite header stamps to the replay time (the recorded stamp plus the offset '
        'between now and the bag time of the first message, scaled by rate), as a live '
        'sensor would stamp them; false keeps the recorded stamps.')
    wait_for_subscribers: int = field(
        0, 'Before playing, wait until every played topic has at least this many subscribers.',
        min=0)
    wait_timeout_s: float = field(30.0, 'Give up waiting for subscribers after this long.',
                                  positive=True)

    def validate(self) -> None:
        """Check cross-field rules; raise ConfigError naming the parameter."""
        if not self.bag:
            raise ConfigError('bag: no bag given (bag_player BAG or -p bag:=PATH)')
        for item in self.remap:
            src, sep, dst = item.partition(':=')
            if not sep or not src or not dst:
                raise ConfigError(f"remap: expected 'from:=to', got {item!r}")


def message_class(msgtype: str) -> Any:
    """Import the rclpy message class of ``pkg/msg/Type`` (ImportError if not installed)."""
    package, _, name = msgtype.partition('/msg/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


class BagPlayer(Node):
    """Publishes a bag's messages at their recorded pace."""

    def __init__(self, overrides: Optional[List[Parameter]] = None, context: Any = None,
                 on_publish: Optional[Callable[[Any, float], None]] = None) -> None:
        """Read parameters, open the bag and create one publisher per played topic.

        Args:
            overrides: parameter values that win over the command line's.
            context: rclpy context (default: the global one).
            on_publish: called with each published BagMessage and the monotonic
                time it went out (the live evaluation measures latency with it).

        Raises:
            ConfigError: for bad parameters; InputError for a bad bag or unknown topics.
        """
        super().__init__('bag_player', parameter_overrides=overrides or [], context=context)
        # Set first: a failed start still gets destroy_node() from rclpy's shutdown.
        self._stop = threading.Event()
        self.done = threading.Event()
        self.bag: Optional[BagReader] = None
        self.on_publish = on_publish
        self.health = NodeHealth(self)
        #: Why playing stopped early ('' while fine).
        self.error = ''
        self.published = 0
        self.loops = 0
        self.config = declare_config(self, BagPlayerConfig)
        self.bag = BagReader(self.config.bag).open()
        info = self.bag.info
        topics = list(self.config.topics) or sorted(info.topics)
        for topic in topics:
            self.bag.require_topic(topic)
        remaps = dict(item.split(':=', 1) for item in self.config.remap)
        unknown = sorted(set(remaps) - set(info.topics))
        if unknown:
            raise InputError(f'remap: {unknown} not in the bag; it has: '
                             f'{info.describe_topics()}', kind='bag_topic')
        qos = reliability_qos(self.config.reliability, self.config.qos_depth)
        self.publishers_by_topic: Dict[str, Any] = {}
        for topic in topics:
            msgtype = info.topics[topic].msgtype
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError):
                self.get_logger().warning(f'{topic}: message type {msgtype} is not installed '
                                          'here; not playing this topic')
                continue
            self.publishers_by_topic[topic] = self.create_publisher(
                cls, remaps.get(topic, topic), qos)
        if not self.publishers_by_topic:
            raise InputError(f'nothing to play from {self.config.bag}: none of the message '
                             f'types of {topics} is installed', kind='bag_topic')
        #: Topics whose messages start with a std_msgs/Header (their stamps are rewritten).
        self.restamped = sorted(t for t in self.publishers_by_topic
                                if self.config.restamp and not self.config.clock
                                and _starts_with_header(info.topics[t].msgtype))
        kept = sorted(set(self.publishers_by_topic) - set(self.restamped))
        if self.restamped and kept:
            self.get_logger().info(f'recorded stamps kept on {kept} (no header first)')
        self.clock_pub = None
        if self.config.clock:
            from rosgraph_msgs.msg import Clock
            self.clock_pub = self.create_publisher(Clock, '/clock', 10)
        self.diagnostics = Diagnostics(
            self, f'emotion_ros: {self.get_fully_qualified_name().lstrip("/")}')
        self.create_timer(2.0, self._publish_diagnostics)
        self.get_logger().info(
            f'playing {len(self.publishers_by_topic)} topics of {self.config.bag} '
            f'({info.duration_s:.1f} s, {info.storage}) at rate {self.config.rate}'
            + (', looping' if self.config.loop else '')
            + ('; header stamps moved to the replay time' if self.restamped else
               '; recorded header stamps'))

    def wait_for_subscribers(self) -> bool:
        """Block until each played topic has enough subscribers (or the timeout)."""
        needed = self.config.wait_for_subscribers
        if needed <= 0:
            return True
        deadline = time.monotonic() + self.config.wait_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(pub.get_subscription_count() >= needed
                   for pub in self.publishers_by_topic.values()):
                return True
            time.sleep(0.05)
        missing = [t for t, p in self.publishers_by_topic.items()
                   if p.get_subscription_count() < needed]
        self.get_logger().warning(f'gave up waiting for subscribers on {missing}; playing')
        return False

    def play(self) -> None:
        """Publish the bag (looping if configured) until done, ``stop()`` or an error.

        An error (unreadable message, publishing failure) ends playing: it is logged
        with its traceback, counted, kept in :attr:`error` and shown in /diagnostics.
        """
        try:
            self.wait_for_subscribers()
            while not self._stop.is_set():
                self._play_once()
                self.loops += 1
                if not self.config.loop:
                    break
        except Exception as exc:  # noqa: B902 - the worker's error boundary
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down (Ctrl-C): publishing fails, nothing went wrong
            self.error = self.health.record('worker', 'play', exc, fatal=True)
            self._publish_diagnostics()
        finally:
            self.done.set()

    @boundary('timer', 'diagnostics')
    def _publish_diagnostics(self) -> None:
        state = 'failed' if self.error else ('done' if self.done.is_set() else 'playing')
        self.diagnostics.publish({'bag': self.config.bag, 'state': state,
                                  'messages_published': self.published, 'loops': self.loops},
                                 message=state)

    def stop(self) -> None:
        """Ask ``play`` to return soon."""
        self._stop.set()

    def _play_once(self) -> None:
        assert self.bag is not None
        info = self.bag.info
        start_ns = info.start_ns + int(self.config.start_offset * 1e9)
        first: Optional[int] = None
        wall0 = 0.0
        epoch0_ns = 0
        for message in self.bag.messages(list(self.publishers_by_topic), start_ns=start_ns):
            if self._stop.is_set():
                return
            if first is None:
                first, wall0, epoch0_ns = message.log_time_ns, time.monotonic(), time.time_ns()
            due = wall0 + (message.log_time_ns - first) / 1e9 / self.config.rate
            # Sleep in short steps so stop() takes effect quickly.
            while not self._stop.is_set():
                delay = due - time.monotonic()
                if delay <= 0:
                    break
                time.sleep(min(delay, 0.05))
            if self.clock_pub is not None:
                from rosgraph_msgs.msg import Clock
                clock = Clock()
                clock.clock.sec, clock.clock.nanosec = divmod(message.log_time_ns, 10**9)
                self.clock_pub.publish(clock)
            data = bytes(message.data)
            if message.topic in self.restamped:
                data = restamp(data, lambda ns: epoch0_ns + round((ns - first)
                                                                  / self.config.rate))
            self.publishers_by_topic[message.topic].publish(data)
            self.published += 1
            if self.on_publish is not None:
                self.on_publish(message, time.monotonic())

    def destroy_node(self) -> None:
        """Stop playing and close the bag."""
        self.stop()
        if self.bag is not None:
            self.bag.close()
        super().destroy_node()


def _starts_with_header(msgtype: str) -> bool:
    try:
        fields = message_class(msgtype).get_fields_and_field_types()
    except (ImportError, AttributeError):
        return False
    return next(iter(fields.values()), None) == 'std_msgs/Header'


#: CDR encapsulation ids of plain (final-type) data: (big-endian ids, little-endian ids).
_PLAIN_CDR = ({0x0000, 0x0006}, {0x0001, 0x0007})


def restamp(data: bytes, new_time: Callable[[int], int]) -> bytes:
    """Serialized message ``data`` (its first field a std_msgs/Header) with its
    ``header.stamp`` replaced by ``new_time(old stamp in nanoseconds)`` (nanoseconds).

    The stamp (int32 sec, uint32 nanosec) is the first thing after the 4-byte CDR
    encapsulation header, so it is patched in place without decoding the message.

    Raises:
        InputError: for data too short or in an encapsulation other than plain CDR.
    """
    if len(data) < 12:
        raise InputError(f'message of {len(data)} bytes is too short for a header',
                         kind='bag_message')
    kind = int.from_bytes(data[0:2], 'big')
    if kind in _PLAIN_CDR[0]:
        order = '>'
    elif kind in _PLAIN_CDR[1]:
        order = '<'
    else:
        raise InputError(f'cannot restamp CDR encapsulation 0x{kind:04x} (use --no-restamp)',
                         kind='bag_message')
    sec, nanosec = struct.unpack_from(order + 'iI', data, 4)
    new_ns = int(new_time(sec * 10**9 + nanosec))
    out = bytearray(data)
    struct.pack_into(order + 'iI', out, 4, new_ns // 10**9, new_ns % 10**9)
    return bytes(out)


def split_ros_args(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split ``argv`` (without the program name) into our flags and ``--ros-args`` blocks.

    Done by hand because rclpy's own filter also strips every ``a:=b`` word
    (the deprecated remapping syntax), which ``--remap a:=b`` needs to keep.
    """
    ours: List[str] = []
    ros: List[str] = []
    inside = False
    for word in argv:
        if word == '--ros-args':
            inside = True
            ros.append(word)
        elif inside and word == '--':
            inside = False
            ros.append(word)
        elif inside:
            ros.append(word)
        else:
            ours.append(word)
    return ours, ros


def parse_args(argv: Sequence[str]) -> List[Parameter]:
    """Command-line flags (ROS arguments removed) as parameter overrides."""
    parser = argparse.ArgumentParser(
        prog='bag_player', description='Publish a rosbag2 bag (sqlite3/mcap) with its '
        'original timing. Flags override the ROS parameters of the same name.')
    parser.add_argument('bag', nargs='?', help='rosbag2 folder or .db3/.mcap file')
    parser.add_argument('--rate', type=float, help='playback speed factor')
    parser.add_argument('--loop', action='store_true', default=None, help='loop forever')
    parser.add_argument('--start-offset', type=float, help='skip this many seconds')
    parser.add_argument('--topics', nargs='+', help='topics to play (default: all)')
    parser.add_argument('--remap', nargs='+', metavar='FROM:=TO', help='rename topics')
    parser.add_argument('--clock', action='store_true', default=None,
                        help='publish /clock (bag time; keeps the recorded stamps)')
    parser.add_argument('--no-restamp', dest='restamp', action='store_false', default=None,
                        help='publish the recorded header stamps (default: moved to the '
                        'replay time)')
    parser.add_argument('--wait-for-subscribers', type=int,
                        help='wait for this many subscribers per topic before playing')
    parser.add_argument('--reliability', choices=('reliable', 'best_effort'))
    args = parser.parse_args(list(argv))
    values = {'bag': args.bag, 'rate': args.rate, 'loop': args.loop,
              'start_offset': args.start_offset, 'topics': args.topics, 'remap': args.remap,
              'clock': args.clock, 'restamp': args.restamp,
              'wait_for_subscribers': args.wait_for_subscribers,
              'reliability': args.reliability}
    return [Parameter(k, value=v) for k, v in values.items() if v is not None]


def main(args: Optional[Sequence[str]] = None) -> None:
    """Run the bag player (exits when the bag is done unless looping)."""
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from emotion_ros.errors import EmotionRosError
    argv = list(sys.argv if args is None else args)
    ours, ros = split_ros_args(argv[1:])
    overrides = parse_args(ours)
    rclpy.init(args=argv[:1] + ros)
    try:
        node = BagPlayer(overrides)
    except (EmotionRosError, ImportError, OSError) as exc:
        rclpy.logging.get_logger('bag_player').fatal(f'cannot start: {describe_error(exc)}')
        rclpy.try_shutdown()
        sys.exit(2)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    player = threading.Thread(target=node.play, name='bag_player', daemon=True)
    player.start()
    try:
        while rclpy.ok() and not node.done.is_set():
            executor.spin_once(timeout_sec=0.1)
        if node.error:
            node.get_logger().fatal(f'playing failed after {node.published} messages: '
                                    f'{node.error}')
        else:
            node.get_logger().info(f'done: published {node.published} messages')
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        player.join(timeout=2.0)
        failed = bool(node.error)
        node.destroy_node()
        rclpy.try_shutdown()
    if failed:
        sys.exit(1)


if __name__ == '__main__':
    main()
