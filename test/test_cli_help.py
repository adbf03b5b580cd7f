"""Every command a user types answers --help (exit 0, a usage line) without starting ROS."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = [
    [str(BIN / 'emotion-ros'), '--help'],
    [str(BIN / 'emotion-ros'), 'evaluate', '--help'],
    [str(BIN / 'emotion-ros'), 'make-bag', '--help'],
    [str(BIN / 'emotion-ros'), 'bag-info', '--help'],
    [str(BIN / 'emotion-ros'), 'up', '--help'],
    [sys.executable, '-m', 'emotion_ros.ros.bag_player_node', '--help'],
    [sys.executable, '-m', 'training', '--help'],
    [sys.executable, '-m', 'training', 'stats', '--help'],
    [sys.executable, '-m', 'training', 'make-synthetic', '--help'],
    [sys.executable, '-m', 'training', 'train', '--help'],
    [sys.executable, '-m', 'training', 'evaluate', '--help'],
    [sys.executable, '-m', 'training', 'export', '--help'],
    [sys.executable, '-m', 'emotion_ros.ros.demo', '--help'],
    [sys.executable, 'tools/gen_params.py', '--help'],
]


@pytest.mark.parametrize('argv', COMMANDS, ids=lambda a: ' '.join(Path(a[0]).name
                                                                  for a in [a]) + ' ' +
                         ' '.join(a[1:]))
def test_help(argv):
    """The command prints its usage and exits 0."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'usage:' in proc.stdout.lower()
