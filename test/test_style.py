"""The code follows the ament_flake8 defaults (99 columns, single quotes), like ament lint."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_flake8_clean():
    """flake8 (config in setup.cfg) reports nothing on the package, training, tests and tools."""
    pytest.importorskip('flake8')
    proc = subprocess.run([sys.executable, '-m', 'flake8', 'emotion_ros', 'training', 'test',
                           'tools', 'benchmarks', 'launch', 'setup.py'],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
