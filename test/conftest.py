"""Shared test fixtures: ROS network isolation and node processes.

Every test run gets its own ROS_DOMAIN_ID, ROS_LOG_DIR under build/, the
loopback-only discovery range and the loopback Fast DDS profile, set here
before anything imports rclpy, and inherited by the node processes tests
start.

Skips: a test skipped for a missing dependency fails the run (test/skip_policy.py
lists the intended skips, e.g. GPU-only tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from skip_policy import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'config' / 'robot.yaml'

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 200))
os.environ['ROS_LOG_DIR'] = str(ROOT / 'build' / 'test_ros_log')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE',
                      str(ROOT / 'tools' / 'fastdds_loopback.xml'))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('EMOTION_ROS_ROOT', str(ROOT))
Path(os.environ['ROS_LOG_DIR']).mkdir(parents=True, exist_ok=True)


def wait_until(predicate: Callable[[], bool], timeout: float, spin: Optional[Callable] = None,
               interval: float = 0.05) -> bool:
    """Poll ``predicate`` (spinning ``spin`` between polls) until true or the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if spin is not None:
            spin()
        else:
            time.sleep(interval)
    return predicate()


class NodeProcess:
    """A node executable running as its own process, with its output captured to a file."""

    def __init__(self, executable: str, args: List[str], log_path: Path,
                 env: Optional[dict] = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'w')
        exe = Path(sys.executable).parent / executable
        self.proc = subprocess.Popen([str(exe), *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     start_new_session=True)

    def output(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL after ``timeout``; returns the exit code."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_node(tmp_path):
    """Start node executables: ``start_node('audio_node', '--ros-args', ...)``; stopped after."""
    started: List[NodeProcess] = []

    def start(executable: str, *args: str, env: Optional[dict] = None) -> NodeProcess:
        proc = NodeProcess(executable, list(args), tmp_path / f'{executable}-{len(started)}.log',
                           env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def ros_node():
    """An rclpy node in the test process (own context), destroyed after the test."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []
    executor = SingleThreadedExecutor(context=context)

    def make(name: str):
        node = rclpy.create_node(name, context=context)
        nodes.append(node)
        executor.add_node(node)
        return node

    make.spin = lambda timeout=0.05: executor.spin_once(timeout_sec=timeout)
    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)
