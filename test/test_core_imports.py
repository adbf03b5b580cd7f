"""The algorithm modules never import ROS (checked in a fresh interpreter)."""

import pkgutil
import subprocess
import sys

import emotion_ros

ALGORITHM_MODULES = sorted(
    m.name for m in pkgutil.walk_packages(emotion_ros.__path__, 'emotion_ros.')
    if not m.name.startswith('emotion_ros.ros') and m.name != 'emotion_ros.evaluation.cli')


def test_algorithm_modules_do_not_load_rclpy():
    """Importing every core module in a fresh interpreter leaves rclpy unloaded."""
    assert 'emotion_ros.pipeline' in ALGORITHM_MODULES and len(ALGORITHM_MODULES) > 10
    code = ('import importlib, sys\n'
            f'for name in {ALGORITHM_MODULES!r}:\n'
            '    importlib.import_module(name)\n'
            "bad = sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.')\n"
            "             or m.endswith('_msgs.msg'))\n"
            'print(bad)\n'
            'sys.exit(1 if bad else 0)\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_training_does_not_load_rclpy():
    """The offline training package imports without ROS too."""
    proc = subprocess.run([sys.executable, '-c',
                           'import sys, training; import training.emotic.dataset;'
                           "sys.exit('rclpy' in sys.modules)"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
