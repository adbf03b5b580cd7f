"""tools/env.sh gives every shell of a checkout the same ROS_DOMAIN_ID (so a second shell
sees the graph the first one started), and an exported ROS_DOMAIN_ID still wins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT


def _checkout(path: Path) -> Path:
    """A checkout at ``path``: this env.sh, the real venv and messages (links)."""
    (path / 'tools').mkdir(parents=True)
    shutil.copy(ROOT / 'tools' / 'env.sh', path / 'tools' / 'env.sh')
    for name in ('.venv', 'install'):
        (path / name).symlink_to((ROOT / name).resolve())
    return path


def _domain(checkout: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != 'ROS_DOMAIN_ID'}
    env.update(extra)
    out = subprocess.run(['bash', '-c', '. tools/env.sh && echo "$ROS_DOMAIN_ID"'],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_every_shell_of_a_checkout_gets_the_same_domain(tmp_path):
    """Shells sourcing env.sh of one checkout agree on a valid domain (1-100), kept in
    build/ros_domain_id; another checkout may get another; an exported value wins and does
    not change the file; an edited file is used as written."""
    first = _checkout(tmp_path / 'a')
    domains = {_domain(first) for _ in range(3)}
    assert len(domains) == 1, domains
    domain = domains.pop()
    assert 1 <= int(domain) <= 100
    assert (first / 'build' / 'ros_domain_id').read_text().strip() == domain
    assert _domain(first, ROS_DOMAIN_ID='42') == '42'
    assert (first / 'build' / 'ros_domain_id').read_text().strip() == domain
    (first / 'build' / 'ros_domain_id').write_text('7\n')
    assert _domain(first) == '7'
    # Different checkouts spread over the range (chosen from the path).
    others = {_domain(_checkout(tmp_path / f'c{i}')) for i in range(6)}
    assert len(others) >= 3, others
