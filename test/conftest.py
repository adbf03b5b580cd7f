"""Shared test fixtures: ROS network isolation and node processes.

Every test run gets its own ROS_DOMAIN_ID, ROS_LOG_DIR under build/, the
loopback-only discovery range and the loopback Fast DDS profile, set here
before anything imports rclpy, and inherited by the node processes tests
start.

Parallel runs (pytest-xdist, ``-n 2``; ``make test`` does this): worker ``gwN`` uses
ROS_DOMAIN_ID base + N * EMOTION_ROS_DOMAIN_STRIDE (default 1; the base is the
ROS_DOMAIN_ID the run started with) and its own ROS_LOG_DIR, so no two workers share a
domain, and node processes started by a test inherit its worker's domain. Tests of one
module run on one worker (module fixtures such as a training run are built once;
``pytest_xdist_make_scheduler``); ``SPLIT_GROUPS`` splits a few long modules into
independent groups, and the longest groups are handed out first (``HEAVY_FIRST``).
Torch and BLAS threads are divided between the workers (OMP_NUM_THREADS, unless set).

Quick subset: ``-m 'not slow'`` (``make test-quick``) leaves out the tests in ``SLOW``
(each over about 4 s on an idle 2-core machine).

Skips: a test skipped for a missing dependency fails the run (test/skip_policy.py
lists the intended skips, e.g. GPU-only tests).
"""

from __future__ import annotations

import os
import resource
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

#: pytest-xdist's worker id ('gw0', 'gw1', ...) in a worker process, else None.
WORKER = os.environ.get('PYTEST_XDIST_WORKER')
WORKER_COUNT = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
#: Fast DDS maps domains 0..232 to ports.
MAX_DOMAIN = 232


def worker_domain(base: int, worker: Optional[str], stride: int = 1) -> int:
    """The ROS domain of xdist ``worker`` ('gwN': base + N * stride, wrapping within the
    valid domains) or ``base`` outside xdist. Distinct for up to 233 // stride workers."""
    index = int(worker[2:]) if worker else 0
    return (base + index * stride) % (MAX_DOMAIN + 1)


# The base domain is fixed once, in the process that starts the run, and handed to the
# xdist workers through the environment they inherit.
BASE_DOMAIN = int(os.environ.setdefault(
    'EMOTION_ROS_TEST_BASE_DOMAIN', os.environ.get('ROS_DOMAIN_ID', str(10 + os.getpid() % 200))))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_DOMAIN_ID'] = str(worker_domain(
    BASE_DOMAIN, WORKER, int(os.environ.get('EMOTION_ROS_DOMAIN_STRIDE', '1'))))
os.environ['ROS_LOG_DIR'] = str(ROOT / 'build' / 'test_ros_log' / (WORKER or 'main'))
if WORKER and WORKER_COUNT > 1:
    # Two workers with a thread per core each would oversubscribe the cores.
    _threads = str(max(1, (os.cpu_count() or 1) // WORKER_COUNT))
    for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        os.environ.setdefault(_var, _threads)
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE',
                      str(ROOT / 'tools' / 'fastdds_loopback.xml'))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('YOLO_OFFLINE', '1')
os.environ.setdefault('EMOTION_ROS_ROOT', str(ROOT))
Path(os.environ['ROS_LOG_DIR']).mkdir(parents=True, exist_ok=True)


#: Modules whose parametrized tests are independent and long: under xdist each parameter
#: set is its own group (tests of a module sharing a parameter id stay together, e.g. the
#: two long-stream tests of one voice that share one decoded stream).
SPLIT_GROUPS = {'test_help_detection.py'}
#: Groups handed to the xdist workers first, longest first (measured, 2-core machine), so
#: that no long group starts last and runs alone while the other worker idles.
HEAVY_FIRST = [
    'test_audio_visual_training.py',        # 240 CPU s: one training run + evaluations
    'test_training_e2e.py',                 # 145 CPU s: one training run + resume
    'test_help_detection.py[flite:awb]',    # ~75 CPU s each: a long stream + 24 excerpts
    'test_help_detection.py[flite:slt]',
    'test_help_detection.py[en-gb]',
    'test_help_detection.py[en+f3]',
    'test_help_detection.py',
    'test_demo.py',
    'test_perception_health.py',
    'test_audio_visual_robot.py',
    'test_evaluation.py',
    'test_incidents_ros.py',
    'test_e2e_graph.py',
    'test_evaluation_live.py',
    'test_training_distributed.py',
    'test_microphone_node.py',
    'test_bad_input.py',
    'test_whisper_backend.py',
]
#: Tests left out of the quick subset (``-m 'not slow'``, ``make test-quick``): each
#: took over 6 s in a full run on a busy 2-core machine (about 4 s on an idle one).
#: A module name marks all its tests (its module fixture is the slow part).
SLOW = {
    'test_audio_visual_training.py', 'test_training_e2e.py', 'test_demo.py',
    'test_audio_common_input.py::test_audio_common_input_gives_cues',
    'test_audio_node_health.py::test_watchdog_restarts_a_stalled_detector_counted_in_diagnostics',
    'test_audio_visual_robot.py::test_perception_node_hears_the_nearest_person_through_topics',
    'test_bad_input.py::test_audio_node_survives_bad_audio',
    'test_bad_input.py::test_invalid_parameters_are_rejected_by_name',
    'test_bad_input.py::test_perception_node_survives_bad_images',
    'test_e2e_graph.py::test_camera_and_call_for_help_give_tracked_estimates_and_an_audio_alert',
    'test_distress_order_ros.py',
    'test_e2e_graph.py::test_microphone_wav_source_gives_audio_only_alert',
    'test_evaluation.py::test_scripted_scenario_with_the_real_pipeline',
    'test_evaluation_live.py::test_live_graph_agrees_with_offline',
    'test_evaluation_transcripts.py::'
    'test_evaluate_writes_transcripts_and_the_report_lists_the_calls_heard',
    'test_help_detection.py::test_detector_answer_depends_only_on_the_utterance',
    'test_help_detection.py::test_every_call_in_a_long_stream_is_detected_at_its_place',
    'test_help_detection.py::test_near_miss_sentences_are_not_a_call_for_help',
    'test_help_detection.py::test_the_answer_to_a_call_does_not_depend_on_where_it_falls',
    'test_help_detection.py::test_transcripts_do_not_depend_on_chunking',
    'test_incident_evaluation.py::test_evaluate_scores_incidents_on_a_bag_with_depth',
    'test_incidents_ros.py::test_alert_monitor_shows_and_acknowledges_incidents',
    'test_large_frames.py::test_4k_rgb8_frames_all_arrive',
    'test_microphone_node.py::test_dead_capture_is_reported_and_restarted',
    'test_microphone_node.py::'
    'test_wav_plays_from_its_first_sample_once_enough_listeners_are_matched',
    'test_perception_health.py::test_failing_explanations_do_not_stop_estimates',
    'test_perception_health.py::test_missing_package_in_configure_is_reported_with_the_pip_name',
    'test_perception_health.py::test_runtime_parameters_take_effect_or_are_refused',
    'test_perception_llava.py::test_llava_backend_in_perception_node',
    'test_training_distributed.py::test_two_cpu_processes_train_one_model',
    'test_whisper_backend.py::test_whisper_backend_through_a_real_audio_node',
}


def xdist_group_of(nodeid: str) -> str:
    """The xdist work unit of a test: its module file name, or for SPLIT_GROUPS modules
    'module[parameter id]' for a parametrized test."""
    path, _, name = nodeid.partition('::')
    module = path.rsplit('/', 1)[-1]
    if module in SPLIT_GROUPS and name.endswith(']') and '[' in name:
        return f'{module}[{name[name.index("[") + 1:-1]}]'
    return module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under xdist (-n N): the tests of one group (xdist_group_of) go to one worker, groups in
    collection order (HEAVY_FIRST first, see pytest_collection_modifyitems)."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    config.option.loadscopereorder = False  # keep HEAVY_FIRST first
    return GroupScheduling(config, log)


def pytest_configure(config):
    """Register the ``slow`` marker."""
    config.addinivalue_line('markers', 'slow: over about 5 s alone; left out by '
                                       "-m 'not slow' (make test-quick)")


def pytest_collection_modifyitems(session, config, items):
    """Mark SLOW tests; in an xdist worker, hand out the HEAVY_FIRST groups first."""
    for item in items:
        module = item.path.name
        if module in SLOW or f'{module}::{item.originalname}' in SLOW:
            item.add_marker(pytest.mark.slow)
    if hasattr(config, 'workerinput'):
        rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
        # Stable sort: heavy groups first in the listed order, the rest in collection order.
        items.sort(key=lambda item: rank.get(xdist_group_of(item.nodeid), len(rank)))


#: Optional per-test CPU accounting: EMOTION_ROS_TEST_CPU_LOG=path appends one line per test,
#: ``nodeid<TAB>wall_s<TAB>cpu_s<TAB>children_cpu_s`` (setup + call + teardown; children are
#: the node processes the test started and waited for). Under xdist each worker appends.
CPU_LOG = os.environ.get('EMOTION_ROS_TEST_CPU_LOG')


def _cpu_now():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic(), own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Log wall and CPU seconds of each test when EMOTION_ROS_TEST_CPU_LOG is set."""
    if not CPU_LOG:
        yield
        return
    before = _cpu_now()
    yield
    after = _cpu_now()
    wall, own, kids = (b - a for a, b in zip(before, after))
    with open(CPU_LOG, 'a') as out:
        out.write(f'{item.nodeid}\t{wall:.2f}\t{own:.2f}\t{kids:.2f}\n')


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
