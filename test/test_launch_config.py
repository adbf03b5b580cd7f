"""The launch file, setup.py and config/robot.yaml agree (ros2 launch cannot run here)."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from emotion_ros.config import flatten, nested_to_flat
from emotion_ros.errors import ConfigError
from emotion_ros.node_config import NODE_CONFIGS
from emotion_ros.robot_config import load_node_config, load_robot_config, read_params_file

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


def test_launch_node_names_match_params_file_sections():
    """Node names in the launch file are the sections of config/robot.yaml."""
    names = {ast.literal_eval(kw['name']) for name, kw in launch_calls()
             if name in ('Node', 'LifecycleNode')}
    sections = set(yaml.safe_load(CONFIG.read_text()))
    assert names == sections


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
            'log_level'} <= set(args)
    assert all('description' in kw for kw in args.values())


@pytest.mark.parametrize('node', sorted(NODE_CONFIGS))
def test_every_config_key_is_declared_by_its_node(node):
    """Every key of config/robot.yaml is a parameter its node declares, and every declared
    parameter is in the file (so the file documents all of them)."""
    file_keys = set(nested_to_flat(yaml.safe_load(CONFIG.read_text())[node]['ros__parameters']))
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


def test_typo_in_params_file_is_reported(tmp_path):
    """A misspelt key in a parameters file is rejected naming the key and the node."""
    bad = tmp_path / 'robot.yaml'
    bad.write_text('distress_node:\n  ros__parameters:\n    cooldwn_s: 3.0\n')
    with pytest.raises(ConfigError, match=r'distress_node.*cooldwn_s'):
        load_node_config(str(bad), 'distress_node')
    assert 'distress_node' in read_params_file(str(bad))
