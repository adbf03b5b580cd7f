"""The skip policy: a skip for a missing dependency fails the run; intended skips pass."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

CASES = """
import pytest


def test_missing_tool():
    pytest.skip('espeak-ng is not installed')


def test_gpu_only():
    pytest.skip('needs a CUDA GPU')


def test_cpu_check():
    pytest.skip('a GPU is present')


@pytest.fixture
def needs_thing():
    pytest.skip('thing is not installed')


def test_fixture_skip(needs_thing):
    pass


@pytest.mark.xfail(reason='known')
def test_xfail():
    assert False


def test_ok():
    pass
"""

MODULE_SKIP = """
import pytest
pytest.importorskip('emotion_ros_no_such_module')


def test_never_runs():
    pass
"""


def _run(tmp_path: Path, *files: str, env=None):
    here = Path(__file__).parent
    return subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'skip_policy', '-p', 'no:cacheprovider', '-q',
         '-rA', '--rootdir', str(tmp_path), *files],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, 'PYTHONPATH': str(here), **(env or {})})


def test_unexpected_skips_fail_and_intended_ones_pass(tmp_path):
    """Skips in a test and in a fixture fail the run naming the reason; the listed GPU skips,
    xfail and passing tests are unaffected."""
    (tmp_path / 'test_cases.py').write_text(CASES)
    result = _run(tmp_path, 'test_cases.py', env={'EMOTION_ROS_ALLOW_SKIPS': '0'})
    out = result.stdout
    assert result.returncode == 1, out
    assert 'FAILED test_cases.py::test_missing_tool' in out
    assert 'ERROR test_cases.py::test_fixture_skip' in out  # a failing setup is an error
    assert 'unexpected skip' in out and 'espeak-ng is not installed' in out
    assert 'SKIPPED [1] test_cases.py' in out and 'needs a CUDA GPU' in out
    assert 'a GPU is present' in out
    assert 'PASSED test_cases.py::test_ok' in out and 'XFAIL' in out
    assert '1 failed, 1 passed, 2 skipped, 1 xfailed, 1 error' in out


def test_module_level_importorskip_is_a_collection_error(tmp_path):
    """pytest.importorskip at module level stops the run with an error naming the module;
    EMOTION_ROS_ALLOW_SKIPS=1 lets a developer's partial environment skip it."""
    (tmp_path / 'test_module.py').write_text(MODULE_SKIP)
    result = _run(tmp_path, 'test_module.py', env={'EMOTION_ROS_ALLOW_SKIPS': '0'})
    assert result.returncode != 0
    assert 'emotion_ros_no_such_module' in result.stdout and 'unexpected skip' in result.stdout
    allowed = _run(tmp_path, 'test_module.py', env={'EMOTION_ROS_ALLOW_SKIPS': '1'})
    # 5: pytest's "no tests ran" (the only test was skipped), not a failure.
    assert allowed.returncode in (0, 5) and '1 skipped' in allowed.stdout, allowed.stdout
