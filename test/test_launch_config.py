"""The launch file, setup.py and config/robot.yaml agree (ros2 launch cannot run here)."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from emotion_ros.config.schema import flatten, nested_to_flat
from emotion_ros.errors import ConfigError
from emotion_ros.config.nodes import NODE_CONFIGS
from emotion_ros.config.robot import load_node_config, load_robot_config, read_params_file

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch' / 'robot.launch.py'
CONFIG = ROOT / 'config' / 'robot.yaml'


def console_scripts():
    """Console script names declared in setup.py."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    return {ast.literal_eval(v).split('=')[0].strip() for v in value.elts}
    raise AssertionError('no console_scripts in setup.py')


def launch_calls():
    """(function name, keyword arguments) of every call in the launch file with literal kwargs."""
    calls = []
    for node in ast.walk(ast.parse(LAUNCH.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, 'id', getattr(node.func, 'attr', ''))
            kwargs = {k.arg: k.value for k in node.keywords if k.arg}
            calls.append((name, kwargs))
    return calls


def test_every_launched_executable_is_a_console_script():
    """Each executable the launch file starts is declared in setup.py, in this package."""
    scripts = console_scripts()
    launched = [(ast.literal_eval(kw['package']), ast.literal_eval(kw['executable']))
                for name, kw in launch_calls() if name in ('Node', 'LifecycleNode')]
    assert len(launched) == 4
    for package, executable in launched:
        assert package == 'emotion_ros'
        assert executable in scripts, executable
    assert {e for _, e in launched} <= set(NODE_CONFIGS)


def test_every_camera_shares_the_robot_wide_topics():
    """Each camera's perception node (in <namespace>/<camera>) is remapped onto the shared
    topics it exchanges with the other nodes: persons, audio, transcripts, voice_emotions."""
    tree = ast.parse(LAUNCH.read_text())
    [function] = [n for n in ast.walk(tree)
                  if isinstance(n, ast.FunctionDef) and n.name == 'perception_nodes']
    remapped = {node.elts[0].value for node in ast.walk(function)
                if isinstance(node, ast.Tuple) and len(node.elts) == 2
                and isinstance(node.elts[0], ast.Constant)}
    assert {'image', 'persons', 'audio', 'transcripts', 'voice_emotions'} <= remapped, remapped


def test_launch_node_names_match_params_file_sections():
    """Node names in the launch file are the sections of config/robot.yaml, whose keys match
    the node in any namespace ('/**/<node>')."""
    names = {ast.literal_eval(kw['name']) for name, kw in launch_calls()
             if name in ('Node', 'LifecycleNode')}
    sections = set(yaml.safe_load(CONFIG.read_text()))
    assert all(s.startswith('/**/') for s in sections), sections
    assert names == {s[len('/**/'):] for s in sections}


def test_default_params_file_exists_and_is_installed():
    """The launch file's default parameters file exists and setup.py installs config/*.yaml."""
    text = LAUNCH.read_text()
    assert re.search(r"'config', 'robot\.yaml'", text)
    assert CONFIG.is_file()
    setup = (ROOT / 'setup.py').read_text()
    assert "glob('config/*.yaml')" in setup and "glob('launch/*.launch.py')" in setup


def test_launch_arguments_documented():
    """The launch arguments the issue asks for exist, each with a description."""
    args = {ast.literal_eval(call.args[0]): kw for call in ast.walk(ast.parse(LAUNCH.read_text()))
            if isinstance(call, ast.Call) and getattr(call.func, 'id', '') ==
            'DeclareLaunchArgument' for kw in [{k.arg: k.value for k in call.keywords}]}
    assert {'params_file', 'namespace', 'use_microphone', 'camera_topic', 'audio_topic',
            'log_level', 'cameras', 'image_topic_pattern', 'camera_info_topic_pattern',
            'depth_topic_pattern'} <= set(args)
    assert all('description' in kw for kw in args.values())


@pytest.mark.parametrize('node', sorted(NODE_CONFIGS))
def test_every_config_key_is_declared_by_its_node(node):
    """Every key of config/robot.yaml is a parameter its node declares, and every declared
    parameter is in the file (so the file documents all of them)."""
    section = yaml.safe_load(CONFIG.read_text())[f'/**/{node}']
    file_keys = set(nested_to_flat(section['ros__parameters']))
    declared = set(flatten(NODE_CONFIGS[node]))
    assert file_keys - declared == set(), f'undeclared keys in robot.yaml: {file_keys - declared}'
    assert declared - file_keys == set(), f'missing from robot.yaml: {declared - file_keys}'
    load_node_config(str(CONFIG), node)  # values valid too


def test_every_parameter_has_a_comment_in_robot_yaml():
    """Each parameter line in config/robot.yaml is preceded by a comment line."""
    lines = CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if (':' in stripped and not stripped.startswith('#') and not stripped.endswith(':')
                and i > 0):
            assert lines[i - 1].strip().startswith('#'), f'line {i + 1} has no comment: {line}'


def test_robot_config_loads_for_the_offline_pipeline():
    """load_robot_config builds the pipeline configuration from the same file."""
    robot = load_robot_config(str(CONFIG))
    assert robot.perception.max_rate_hz > 0 and robot.fusion.cooldown_s >= 0
    assert robot.fusion.min_evidence_s == load_node_config(
        str(CONFIG), 'distress_node').fusion.min_evidence_s


def test_typo_in_params_file_is_reported(tmp_path):
    """A misspelt key in a parameters file is rejected naming the key and the node."""
    bad = tmp_path / 'robot.yaml'
    bad.write_text('distress_node:\n  ros__parameters:\n    cooldwn_s: 3.0\n')
    with pytest.raises(ConfigError, match=r'distress_node.*cooldwn_s'):
        load_node_config(str(bad), 'distress_node')
    assert 'distress_node' in read_params_file(str(bad))


def get_parameters(ros_node, node_name, names):
    """Values of parameters of a running node, via its get_parameters service."""
    from rcl_interfaces.srv import GetParameters
    from conftest import wait_until
    client = ros_node('param_reader').create_client(GetParameters,
                                                    f'{node_name}/get_parameters')
    assert wait_until(client.service_is_ready, 60, ros_node.spin), f'{node_name} not up'
    future = client.call_async(GetParameters.Request(names=list(names)))
    assert wait_until(future.done, 30, ros_node.spin)
    out = {}
    for name, value in zip(names, future.result().values):
        out[name] = (value.double_value, value.integer_value, value.string_value,
                     value.bool_value)
    return out


@pytest.mark.parametrize('namespace', ['/cam_left', '/robot1/cam_right'])
def test_namespaced_nodes_read_the_params_file(start_node, ros_node, tmp_path, namespace):
    """config/robot.yaml (with two values edited, as a user would) configures real nodes
    started in a namespace: they read the file's values, not their defaults."""
    text = CONFIG.read_text()
    assert '    cooldown_s: 0.0\n' in text and '    max_rate_hz: 5.0\n' in text
    edited = tmp_path / 'robot.yaml'
    edited.write_text(text.replace('    cooldown_s: 0.0\n', '    cooldown_s: 42.0\n')
                      .replace('    max_rate_hz: 5.0\n', '    max_rate_hz: 3.5\n'))
    args = ['--ros-args', '-r', f'__ns:={namespace}', '--params-file', str(edited)]
    start_node('distress_node', *args)
    start_node('perception_node', *args)
    distress = get_parameters(ros_node, f'{namespace}/distress_node',
                              ['cooldown_s', 'incidents_depth'])
    assert distress['cooldown_s'][0] == 42.0 and distress['incidents_depth'][1] == 5
    perception = get_parameters(ros_node, f'{namespace}/perception_node', ['max_rate_hz'])
    assert perception['max_rate_hz'][0] == 3.5
