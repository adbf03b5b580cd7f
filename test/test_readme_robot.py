"""The README's robot install installs what the nodes import: both requirement files, the
--no-deps one with --no-deps, and every package listed exists in a requirements file."""

from __future__ import annotations

import re

from conftest import ROOT


def _robot_block() -> str:
    text = (ROOT / 'README.md').read_text()
    section = text.split('## On a robot', 1)[1].split('\n## ', 1)[0]
    return section.split('```bash', 1)[1].split('```', 1)[0]


def test_robot_section_installs_both_requirement_files():
    """requirements-robot.txt and requirements-nodeps.txt (with --no-deps) are both installed,
    and the files named exist."""
    lines = [line.split('#')[0].strip() for line in _robot_block().splitlines()]
    installs = [line for line in lines if line.startswith('pip install')]
    files = {m.group(1): line for line in installs
             for m in [re.search(r'-r\s+\S*?(requirements[\w-]*\.txt)', line)] if m}
    assert set(files) == {'requirements-robot.txt', 'requirements-nodeps.txt'}, installs
    assert '--no-deps' in files['requirements-nodeps.txt']
    assert '--no-deps' not in files['requirements-robot.txt']
    for name in files:
        assert (ROOT / name).is_file(), name


def test_robot_requirements_cover_the_desktop_ones():
    """Every package of requirements.txt that the robot runs (not ROS wheels, build or test
    tools) is in requirements-robot.txt or requirements-nodeps.txt."""
    def names(path):
        out = set()
        for line in (ROOT / path).read_text().splitlines():
            line = line.split('#')[0].strip()
            if line and not line.startswith('-'):
                out.add(re.split(r'[<>=!\[; ]', line, 1)[0].lower())
        return out
    robot = names('requirements-robot.txt') | names('requirements-nodeps.txt')
    desktop = names('requirements.txt')
    not_on_robot = {n for n in desktop if n.startswith(('ros-', 'colcon', 'flake8', 'pytest'))}
    # Only evaluation reports, benchmarks, training or tests use these (or another package
    # pulls them in, like tokenizers with transformers).
    not_on_robot |= {'catkin-pkg', 'matplotlib', 'mcap-ros2-support', 'psutil', 'scikit-image',
                     'scikit-learn', 'tokenizers'}
    missing = desktop - not_on_robot - robot
    assert not missing, f'in requirements.txt but not installed on a robot: {sorted(missing)}'
