"""Read ``config/robot.yaml`` (a ROS 2 parameters file) without ROS.

The bag evaluation and the benchmarks use this to build exactly the
configuration the live nodes get from the same file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping

import yaml

from emotion_ros.audio.cues import AudioCueConfig
from emotion_ros.config.schema import from_mapping, nested_to_flat
from emotion_ros.errors import ConfigError
from emotion_ros.fusion.distress import FusionConfig
from emotion_ros.config.nodes import NODE_CONFIGS
from emotion_ros.perception.pipeline import PerceptionConfig


@dataclasses.dataclass(frozen=True)
class RobotConfig:
    """The pipeline-relevant configuration of the whole node graph."""

    perception: PerceptionConfig
    audio: AudioCueConfig
    fusion: FusionConfig
    source: str


def read_params_file(path: str) -> Dict[str, Dict[str, Any]]:
    """Flat parameters per node name from a ROS 2 parameters YAML file.

    Entries are matched by the last segment of their key (``/emotion/perception_node``
    and ``perception_node`` both give ``perception_node``); ``/**`` entries apply
    to every node.

    Raises:
        ConfigError: when the file is missing or not a parameters file.
    """
    if not os.path.isfile(path):
        raise ConfigError(f'parameters file not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            tree = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f'{path}: not valid YAML: {exc}') from exc
    if not isinstance(tree, Mapping):
        raise ConfigError(f'{path}: expected a mapping of node names')
    common: Dict[str, Any] = {}
    per_node: Dict[str, Dict[str, Any]] = {}
    for key, body in tree.items():
        if not isinstance(body, Mapping) or 'ros__parameters' not in body:
            raise ConfigError(f'{path}: entry {key!r} has no ros__parameters')
        flat = nested_to_flat(body['ros__parameters'] or {})
        name = str(key).rstrip('/').split('/')[-1]
        if name in ('**', '*'):
            common.update(flat)
        else:
            per_node.setdefault(name, {}).update(flat)
    for name in list(per_node) + [n for n in NODE_CONFIGS if n not in per_node]:
        per_node[name] = {**common, **per_node.get(name, {})}
    return per_node


def load_node_config(path: str, node: str) -> Any:
    """The validated config dataclass of one node from a parameters file."""
    params = read_params_file(path).get(node, {})
    params = {k: v for k, v in params.items() if k != 'use_sim_time'}
    try:
        return from_mapping(NODE_CONFIGS[node], params)
    except ConfigError as exc:
        raise ConfigError(f'{path} [{node}] {exc}') from exc


def load_robot_config(path: str) -> RobotConfig:
    """Build the pipeline configuration of all nodes from ``config/robot.yaml``."""
    perception = load_node_config(path, 'perception_node')
    audio = load_node_config(path, 'audio_node')
    distress = load_node_config(path, 'distress_node')
    return RobotConfig(perception=perception.pipeline, audio=audio.cues,
                       fusion=distress.fusion, source=os.path.abspath(path))
