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


ARG_SETS = [{}, {'use_microphone': 'false'},
            {'cameras': 'cam_left,cam_right', 'namespace': 'robot1'},
            {'namespace': '/robot1', 'camera_topic': '/cam/color/image_raw',
             'depth_topic': '/cam/aligned_depth_to_color/image_raw', 'audio_topic': '/mic'},
            {'cameras': 'front', 'image_topic_pattern': '/{camera}/color/image_raw',
             'log_level': 'debug', 'params_file': str(CONFIG)}]


def test_every_launched_executable_is_a_console_script():
    """Each executable of the graph is declared in setup.py and its module runs as a script."""
    from emotion_ros.ros import graph
    scripts = console_scripts()
    specs = graph.nodes({}, str(CONFIG))
    assert [s.executable for s in specs] == ['perception_node', 'audio_node', 'distress_node',
                                             'microphone_node']
    setup = (ROOT / 'setup.py').read_text()
    for spec in specs:
        assert spec.executable in scripts and spec.executable in NODE_CONFIGS
        assert f"'{spec.executable} = {spec.module}:main'" in setup
        module = ROOT / (spec.module.replace('.', '/') + '.py')
        assert "if __name__ == '__main__':" in module.read_text()


def test_launch_file_is_a_thin_reader_of_the_graph_description():
    """robot.launch.py declares exactly graph.ARGUMENTS and builds every node action from a
    graph.nodes() spec (executable, name, namespace, parameters, remappings, arguments,
    lifecycle), with no node or remapping of its own: ros2 launch and `emotion-ros up`
    cannot start different graphs."""
    tree = ast.parse(LAUNCH.read_text())
    text = LAUNCH.read_text()
    assert 'graph.nodes(given)' in text and 'for name in graph.ARGUMENT_NAMES' in text
    assert 'for arg in graph.ARGUMENTS' in text
    calls = [(name, kw) for name, kw in launch_calls() if name == 'kind']
    assert len(calls) == 1, 'one node-action constructor, fed from the spec'
    kwargs = {k: ast.unparse(v) for k, v in calls[0][1].items()}
    assert kwargs == {'package': 'graph.PACKAGE', 'executable': 'spec.executable',
                      'name': 'spec.name', 'namespace': 'spec.namespace',
                      'parameters': 'list(spec.parameters)',
                      'remappings': 'list(spec.remappings)',
                      'arguments': "['--ros-args', *spec.arguments]", 'output': "'screen'"}
    assert 'kind = LifecycleNode if spec.lifecycle else Node' in text
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                and isinstance(n.value, str)}
    assert not literals & {'image', 'persons', 'audio', 'depth', 'camera_info',
                           'perception_node', 'distress_node', 'audio_node'}, literals


@pytest.mark.parametrize('given', ARG_SETS)
def test_up_starts_what_the_description_says(given):
    """`emotion-ros up --dry-run` (the command line of up) prints exactly the specs the
    launch file reads for the same arguments: node list, namespaces, remappings, parameters
    files, lifecycle, and the command that runs each."""
    import json
    import subprocess
    import sys

    from emotion_ros.ros import graph
    words = [f'{k}:={v}' for k, v in given.items()]
    proc = subprocess.run([sys.executable, '-m', 'emotion_ros.evaluation.cli', 'up',
                           '--dry-run', *words], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    specs = graph.nodes(given, graph.find_default_params_file(['config/robot.yaml']))
    assert [dict(s.as_dict(), command=s.command(sys.executable)) for s in specs] == printed
    for spec, item in zip(specs, printed):
        words = item['command']
        assert words[words.index('--ros-args'):] == spec.ros_args()
        assert Path(item['parameters'][0]).resolve() == CONFIG.resolve()


@pytest.mark.parametrize('given', ARG_SETS)
def test_every_camera_shares_the_robot_wide_topics(given):
    """Each camera's perception node (in <namespace>/<camera>) is remapped onto the shared
    topics it exchanges with the other nodes (persons, audio, transcripts, voice_emotions:
    the ones distress_node and audio_node use in <namespace>) and onto its camera's image,
    CameraInfo and depth topics; only perception nodes are managed."""
    from emotion_ros.ros import graph
    specs = graph.nodes(given, str(CONFIG))
    namespace = graph.join_ns(given.get('namespace', ''))
    distress = next(s for s in specs if s.name == 'distress_node')
    assert distress.namespace == namespace
    cameras = [s for s in specs if s.name == 'perception_node']
    assert len(cameras) == len(graph.camera_list(given.get('cameras', '')))
    for spec in specs:
        assert spec.lifecycle == (spec.name == 'perception_node')
        assert spec.parameters == (given.get('params_file', str(CONFIG)),)
        assert spec.arguments == ('--log-level', given.get('log_level', 'info'))
    for spec in cameras:
        remaps = dict(spec.remappings)
        assert set(remaps) == {'image', 'camera_info', 'depth', 'persons', 'audio',
                               'transcripts', 'voice_emotions'}
        assert remaps['persons'] == f'{namespace}/persons'
        assert remaps['transcripts'] == f'{namespace}/transcripts'
        audio = given.get('audio_topic', 'audio')
        assert remaps['audio'] == (audio if audio.startswith('/') else f'{namespace}/{audio}')
        image = remaps['image']
        if not given.get('cameras'):
            assert image == given.get('camera_topic', '/camera/image_raw')
            base = image.rsplit('/', 1)[0]
            assert remaps['camera_info'] == given.get('camera_info_topic',
                                                      f'{base}/camera_info')
            assert remaps['depth'] == given.get('depth_topic', f'{base}/depth/image_raw')
        else:
            camera = spec.namespace.rsplit('/', 1)[1]
            assert spec.namespace == graph.join_ns(namespace, camera)
            assert remaps['depth'] == f'/{camera}/depth/image_raw'


def test_depth_and_camera_info_topics_match_what_make_bag_writes():
    """make-bag --camera-info --depth writes where the graph's default remaps look, for the
    single camera and for a named camera (one convention: graph.camera_topics)."""
    from emotion_ros.evaluation.bagtools import MakeBagOptions
    from emotion_ros.ros import graph
    [single] = [s for s in graph.nodes({}, str(CONFIG)) if s.lifecycle]
    options = MakeBagOptions(image_topic=dict(single.remappings)['image'])
    assert dict(single.remappings)['depth'] == options.depth_topic == '/camera/depth/image_raw'
    assert dict(single.remappings)['camera_info'] == options.camera_info_topic
    [left] = [s for s in graph.nodes({'cameras': 'cam_left'}, str(CONFIG)) if s.lifecycle]
    options = MakeBagOptions(image_topic=dict(left.remappings)['image'])
    assert dict(left.remappings)['depth'] == options.depth_topic
    assert dict(left.remappings)['camera_info'] == options.camera_info_topic


def test_launch_node_names_match_params_file_sections():
    """Node names of the graph are the sections of config/robot.yaml, whose keys match the
    node in any namespace ('/**/<node>')."""
    from emotion_ros.ros import graph
    names = {s.name for s in graph.nodes({'cameras': 'a,b'}, str(CONFIG))}
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
    """The graph arguments the issues ask for exist, each with a description."""
    from emotion_ros.ros import graph
    args = {a.name: a for a in graph.ARGUMENTS}
    assert {'params_file', 'namespace', 'use_microphone', 'camera_topic', 'audio_topic',
            'log_level', 'cameras', 'image_topic_pattern', 'camera_info_topic_pattern',
            'depth_topic_pattern', 'camera_info_topic', 'depth_topic'} <= set(args)
    assert all(len(a.description) > 20 for a in args.values())


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
