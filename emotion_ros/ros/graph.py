"""The one description of the robot's node graph: which nodes, in which namespaces, with
which remappings and parameters files, and which are managed (lifecycle) nodes.

Both ways of starting the graph read it, so they cannot drift apart:
``ros2 launch emotion_ros robot.launch.py`` (launch/robot.launch.py turns each
:class:`NodeSpec` into a launch action) and ``emotion-ros up`` (which runs each
spec's :meth:`NodeSpec.command` under :mod:`emotion_ros.ros.supervisor`). The
arguments (:data:`ARGUMENTS`) are the launch arguments and ``up``'s ``name:=value``
words alike.

Topic conventions (:func:`camera_topics`): a camera publishing ``<ns>/image_raw`` has
its CameraInfo on ``<ns>/camera_info`` and its aligned depth on
``<ns>/depth/image_raw``: what ``emotion-ros make-bag --camera-info --depth``
writes; drivers with other names (RealSense, ZED: docs/integration.md) are
mapped with the ``*_topic`` / ``*_topic_pattern`` arguments.

No rclpy or launch import here: the launch file, the command line and the tests load
it anywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

PACKAGE = 'emotion_ros'


@dataclasses.dataclass(frozen=True)
class Argument:
    """One argument of the graph (a launch argument, a ``name:=value`` word of ``up``)."""

    name: str
    default: str
    description: str


#: Every argument, in the order the launch file declares them. ``params_file``'s default
#: '' means the package's config/robot.yaml (each starter finds it its own way).
ARGUMENTS: Tuple[Argument, ...] = (
    Argument('params_file', '',
             "ROS 2 parameters file for all emotion_ros nodes (default: the package's "
             'config/robot.yaml).'),
    Argument('namespace', '', 'Namespace of all emotion_ros nodes and topics.'),
    Argument('use_microphone', 'true',
             'Start microphone_node (false: audio comes from another driver on audio_topic).'),
    Argument('cameras', '',
             'Comma-separated camera names: one perception node per camera in namespace '
             '<namespace>/<camera>, its topics from the *_topic_pattern arguments. Empty: one '
             'camera on camera_topic.'),
    Argument('camera_topic', '/camera/image_raw',
             'Camera topic when cameras is empty (Image, or CompressedImage with '
             'image_transport: compressed).'),
    Argument('camera_info_topic', '',
             "CameraInfo topic when cameras is empty ('': <camera_topic's namespace>/"
             'camera_info).'),
    Argument('depth_topic', '',
             "Aligned depth topic when cameras is empty ('': <camera_topic's namespace>/"
             'depth/image_raw; used with localization.use_depth: true).'),
    Argument('image_topic_pattern', '/{camera}/image_raw',
             'Image topic of each camera in cameras.'),
    Argument('camera_info_topic_pattern', '/{camera}/camera_info',
             'CameraInfo topic of each camera in cameras.'),
    Argument('depth_topic_pattern', '/{camera}/depth/image_raw',
             'Aligned depth topic of each camera in cameras (used with '
             'localization.use_depth: true).'),
    Argument('audio_topic', 'audio', 'Audio topic (AudioFrame or audio_common types).'),
    Argument('log_level', 'info', 'Log level of all nodes (debug, info, warn, error).'),
)

ARGUMENT_NAMES = tuple(a.name for a in ARGUMENTS)


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the graph: everything a starter needs."""

    executable: str  # console script of the package (= node name)
    module: str  # its Python module (``python -m``)
    name: str
    namespace: str  # '' or '/a/b'
    parameters: Tuple[str, ...]  # parameters files
    remappings: Tuple[Tuple[str, str], ...]
    arguments: Tuple[str, ...]  # extra --ros-args words (log level)
    lifecycle: bool = False  # managed: configure then activate after start

    @property
    def fqn(self) -> str:
        """Fully qualified node name, e.g. '/cam_left/perception_node'."""
        return f'{self.namespace}/{self.name}'

    def ros_args(self) -> List[str]:
        """The ``--ros-args`` words that give the node its name, namespace, files, remaps."""
        words = ['--ros-args', '-r', f'__node:={self.name}']
        if self.namespace:
            words += ['-r', f'__ns:={self.namespace}']
        for path in self.parameters:
            words += ['--params-file', path]
        for src, dst in self.remappings:
            words += ['-r', f'{src}:={dst}']
        return words + list(self.arguments)

    def command(self, python: str) -> List[str]:
        """The command line that runs this node with the interpreter ``python``."""
        return [python, '-m', self.module, *self.ros_args()]

    def as_dict(self) -> Dict[str, object]:
        """Plain data (``emotion-ros up --dry-run`` prints it)."""
        out = dataclasses.asdict(self)
        out['remappings'] = [list(r) for r in self.remappings]
        out['parameters'] = list(self.parameters)
        out['arguments'] = list(self.arguments)
        out['fqn'] = self.fqn
        return out


def camera_list(text: str) -> List[str]:
    """Camera names from the 'cameras' argument ('' -> one camera without a namespace)."""
    names = [c.strip().strip('/') for c in text.replace(';', ',').split(',')]
    return [c for c in names if c] or ['']


def join_ns(*parts: str) -> str:
    """Join namespace parts ('' parts skipped) into '/a/b' ('' when all are empty)."""
    inner = '/'.join(p.strip('/') for p in parts if p and p.strip('/'))
    return f'/{inner}' if inner else ''


def camera_topics(image_topic: str) -> Tuple[str, str]:
    """(CameraInfo topic, aligned depth topic) beside a camera's image topic.

    ``/cam/image_raw`` -> ``/cam/camera_info``, ``/cam/depth/image_raw`` (the
    image_pipeline convention, and what make-bag writes). An image topic without a
    namespace gives ``camera_info`` and ``depth/image_raw`` in the same namespace.
    """
    if '/' not in image_topic:
        return 'camera_info', 'depth/image_raw'
    base = image_topic.rsplit('/', 1)[0]
    return f'{base}/camera_info', f'{base}/depth/image_raw'


def _truthy(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ('true', '1', 'yes', 'on'):
        return True
    if value in ('false', '0', 'no', 'off', ''):
        return False
    raise ValueError(f'expected true or false, got {text!r}')


def resolve_arguments(given: Mapping[str, str]) -> Dict[str, str]:
    """All arguments: the defaults, overridden by ``given``.

    Raises:
        ValueError: for an unknown argument name (naming the known ones).
    """
    unknown = sorted(set(given) - set(ARGUMENT_NAMES))
    if unknown:
        raise ValueError(f'unknown argument(s) {unknown}; known: {", ".join(ARGUMENT_NAMES)}')
    values = {a.name: a.default for a in ARGUMENTS}
    values.update({k: str(v) for k, v in given.items()})
    return values


def nodes(arguments: Mapping[str, str], default_params_file: str = '') -> List[NodeSpec]:
    """The node graph for these arguments (names of :data:`ARGUMENTS`; missing: defaults).

    One managed perception node per camera, audio_node, distress_node and (with
    use_microphone) microphone_node. Every perception node is remapped onto the topics it
    shares with the others (persons, audio, transcripts, voice_emotions) and onto its
    camera's image, CameraInfo and depth topics.
    """
    args = resolve_arguments(arguments)
    params = (args['params_file'] or default_params_file,)
    params = tuple(p for p in params if p)
    namespace = join_ns(args['namespace'])
    extra = ('--log-level', args['log_level'])
    persons_topic = join_ns(namespace, 'persons')
    audio_topic = args['audio_topic']
    shared_audio = audio_topic if audio_topic.startswith('/') else join_ns(namespace, audio_topic)
    specs: List[NodeSpec] = []
    for camera in camera_list(args['cameras']):
        if camera:
            image = args['image_topic_pattern'].format(camera=camera)
            info = args['camera_info_topic_pattern'].format(camera=camera)
            depth = args['depth_topic_pattern'].format(camera=camera)
        else:
            image = args['camera_topic']
            default_info, default_depth = camera_topics(image)
            info = args['camera_info_topic'] or default_info
            depth = args['depth_topic'] or default_depth
        # Shared with the other nodes, not per camera: persons to distress_node, and for the
        # audio_visual backend the microphone, audio_node's transcripts and the audio-only
        # estimate (voice_emotions) to distress_node.
        remappings = (('image', image), ('camera_info', info), ('depth', depth),
                      ('persons', persons_topic), ('audio', shared_audio),
                      ('transcripts', join_ns(namespace, 'transcripts')),
                      ('voice_emotions', join_ns(namespace, 'voice_emotions')))
        specs.append(NodeSpec('perception_node', 'emotion_ros.ros.perception_node',
                              'perception_node', join_ns(namespace, camera), params,
                              remappings, extra, lifecycle=True))
    specs.append(NodeSpec('audio_node', 'emotion_ros.ros.audio_node', 'audio_node', namespace,
                          params, (('audio', audio_topic),), extra))
    specs.append(NodeSpec('distress_node', 'emotion_ros.ros.distress_node', 'distress_node',
                          namespace, params, (), extra))
    if _truthy(args['use_microphone']):
        specs.append(NodeSpec('microphone_node', 'emotion_ros.ros.microphone_node',
                              'microphone_node', namespace, params, (('audio', audio_topic),),
                              extra))
    return specs


def parse_assignments(words: Sequence[str]) -> Dict[str, str]:
    """``['cameras:=a,b', 'log_level:=debug']`` -> a dict (ValueError for other words)."""
    out: Dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition(':=')
        if not sep or not name:
            raise ValueError(f'expected name:=value, got {word!r}')
        out[name] = value
    return out


def find_default_params_file(candidates: Optional[Sequence[str]] = None) -> str:
    """config/robot.yaml of this checkout or of the installed package ('' if none)."""
    import os
    from pathlib import Path
    paths = [Path(p) for p in candidates or []]
    root = os.environ.get('EMOTION_ROS_ROOT')
    if root:
        paths.append(Path(root) / 'config' / 'robot.yaml')
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            paths.append(Path(prefix) / 'share' / PACKAGE / 'config' / 'robot.yaml')
    paths.append(Path(__file__).resolve().parents[2] / 'config' / 'robot.yaml')
    for path in paths:
        if path.is_file():
            return str(path.resolve())
    return ''
