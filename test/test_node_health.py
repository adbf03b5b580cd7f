"""The error boundary (ros.health) and run-time parameters (ros.params), on real rclpy nodes.

Callbacks that raise are counted and put the node's /diagnostics at ERROR with the
reason (then recover); transitions return FAILURE and hold ERROR; services answer
with success=false; a missing module names the pip package. declare_config either
applies a change (validated against the full new set) or refuses it, never both.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from emotion_ros_msgs.srv import ExplainPerson
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import String

from conftest import ROOT, wait_until
from emotion_ros.config.schema import field
from emotion_ros.errors import ConfigError, ModelLoadError
from emotion_ros.ros.diagnostics import Diagnostics
from emotion_ros.ros.health import boundary, describe_error, install_hint, NodeHealth
from emotion_ros.ros.params import declare_config, reload_config


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """A config with a cross-field rule, like the fusion thresholds."""

    low: float = field(0.3, 'Lower threshold.', min=0.0, max=1.0)
    high: float = field(0.6, 'Upper threshold.', min=0.0, max=1.0)
    label: str = field('a', 'A label.')

    def validate(self) -> None:
        """Low must not exceed high."""
        if self.low > self.high:
            raise ConfigError(f'low ({self.low}) must be <= high ({self.high})')


@pytest.fixture
def graph():
    """A context + executor; ``graph.add(node)`` spins it, ``graph.spin()`` spins once."""
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []

    class Graph:
        ctx = context

        def add(self, node):
            nodes.append(node)
            executor.add_node(node)
            return node

        def spin(self, timeout=0.05):
            executor.spin_once(timeout_sec=timeout)

    yield Graph()
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


class RecordingLogger:
    """Wraps a node's logger and keeps what was logged at error level."""

    def __init__(self, inner):
        self.inner = inner
        self.errors = []

    def error(self, msg, **kw):
        self.errors.append(msg)
        return self.inner.error(msg, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _record_logs(node):
    logger = RecordingLogger(node.get_logger())
    node.get_logger = lambda: logger
    return logger


def _latest_status(diags, name):
    for array in reversed(diags):
        for status in array.status:
            if status.name == name:
                return status
    return None


def test_subscription_errors_are_counted_reported_and_recover(graph):
    """A raising subscription callback keeps the node running, logs its traceback once, counts
    every error, and diagnostics say ERROR with the reason until recover_s passes."""
    node = graph.add(rclpy.create_node('health_sub', context=graph.ctx))
    log = _record_logs(node)
    node.health = NodeHealth(node, recover_s=1.0, log_period_s=60.0)
    received = []

    def on_msg(msg):
        if msg.data.startswith('bad'):
            raise KeyError(f'no field in {msg.data}')
        received.append(msg.data)
    node.create_subscription(String, 'health_topic', node.health.wrap(on_msg, 'subscription'),
                             10)
    diagnostics = Diagnostics(node, 'health test')
    peer = graph.add(rclpy.create_node('health_peer', context=graph.ctx))
    diags = []
    peer.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    pub = peer.create_publisher(String, 'health_topic', 10)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 10, graph.spin)
    for i in range(5):
        pub.publish(String(data=f'bad {i}'))
        graph.spin(0.05)
    assert wait_until(lambda: node.health.total == 5, 10, graph.spin)
    pub.publish(String(data='good'))
    assert wait_until(lambda: received == ['good'], 10, graph.spin)
    tracebacks = [m for m in log.errors if 'Traceback' in m]
    assert len(tracebacks) == 1 and 'KeyError' in tracebacks[0], log.errors
    assert len(log.errors) == 1, 'repeats within log_period_s must not be logged'
    diagnostics.publish({'x': 1})
    assert wait_until(lambda: _latest_status(diags, 'health test') is not None, 10, graph.spin)
    status = _latest_status(diags, 'health test')
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.ERROR
    assert 'subscription on_msg' in status.message and 'KeyError' in status.message
    assert values['errors.subscription.on_msg'] == '5' and values['errors_total'] == '5'
    time.sleep(1.1)
    diags.clear()
    diagnostics.publish({'x': 1})
    assert wait_until(lambda: _latest_status(diags, 'health test') is not None, 10, graph.spin)
    status = _latest_status(diags, 'health test')
    assert status.level == DiagnosticStatus.OK, status.message
    assert {kv.key: kv.value for kv in status.values}['errors_total'] == '5'


def test_repeated_errors_are_logged_again_after_the_period(graph):
    """After log_period_s a repeated error is logged once more (no traceback) with the number
    of suppressed repeats; a new exception type logs its own traceback."""
    node = graph.add(rclpy.create_node('health_log', context=graph.ctx))
    log = _record_logs(node)
    health = NodeHealth(node, log_period_s=0.3)

    def tick(kind=ValueError):
        raise kind('boom')
    guarded = health.wrap(tick, 'timer')
    for _ in range(4):
        assert guarded() is None
    time.sleep(0.35)
    guarded()
    guarded(RuntimeError)
    assert health.counts['timer.tick'] == 6
    assert len(log.errors) == 3, log.errors
    assert 'Traceback' in log.errors[0] and 'Traceback' not in log.errors[1]
    assert '3 more since the last report' in log.errors[1]
    assert 'RuntimeError' in log.errors[2] and 'Traceback' in log.errors[2]


class ModelNode(LifecycleNode):
    """A lifecycle node whose configure imports an optional module."""

    def __init__(self, context, module):
        super().__init__('health_lifecycle', context=context)
        self.health = NodeHealth(self)
        self.module = module
        self.diagnostics = Diagnostics(self, 'health lifecycle')
        self.my_services = []

    @boundary('transition')
    def on_configure(self, state):
        """Import the module (may raise ImportError)."""
        __import__(self.module)
        service = self.create_service(ExplainPerson, 'health_explain', self._explain)
        self.my_services.append(service)
        return TransitionCallbackReturn.SUCCESS

    @boundary('transition')
    def on_cleanup(self, state):
        """Destroy what configure created."""
        for service in self.my_services:
            self.destroy_service(service)
        self.my_services = []
        return TransitionCallbackReturn.SUCCESS

    @boundary('service')
    def _explain(self, request, response):
        raise RuntimeError(f'backend crashed on track {request.track_id}')


def test_failed_transition_holds_error_naming_the_pip_package(graph):
    """An ImportError in configure returns FAILURE (the node stays unconfigured) and holds
    ERROR naming `pip install <package>` until a configure succeeds."""
    node = graph.add(ModelNode(graph.ctx, 'emotion_ros_missing_module_for_test'))
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    level, message = node.health.status()
    assert level == DiagnosticStatus.ERROR
    assert 'configure' in message and 'pip install emotion-ros-missing-module-for-test' in message
    node.health.recover_s = 0.0
    level, message = node.health.status()
    assert level == DiagnosticStatus.ERROR, 'a failed transition stays ERROR'
    node.module = 'json'
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.health.status() == (DiagnosticStatus.OK, 'ok')
    assert node.health.counts['transition.configure'] == 1


def test_service_errors_answer_with_the_reason(graph):
    """A raising service handler answers success=false with the reason; the server keeps
    serving; the error is counted."""
    node = graph.add(ModelNode(graph.ctx, 'json'))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    client_node = graph.add(rclpy.create_node('health_client', context=graph.ctx))
    client = client_node.create_client(ExplainPerson, 'health_explain')
    assert wait_until(client.service_is_ready, 10, graph.spin)
    for track in (3, 4):
        future = client.call_async(ExplainPerson.Request(track_id=track))
        assert wait_until(future.done, 10, graph.spin)
        response = future.result()
        assert not response.success
        assert f'backend crashed on track {track}' in response.message
        assert 'service explain' in response.message
    assert node.health.counts['service.explain'] == 2


def test_install_hints_name_the_pip_package():
    """ImportErrors, also wrapped in our errors, name the pip package from the table."""
    cases = {'cv2': 'opencv-python-headless', 'sklearn': 'scikit-learn', 'peft': 'peft',
             'yaml': 'pyyaml', 'some_new_lib': 'some-new-lib'}
    for module, pip in cases.items():
        hint = install_hint(ModuleNotFoundError(f'No module named {module!r}', name=module))
        assert f'pip install {pip}`' in hint, hint
    try:
        try:
            raise ModuleNotFoundError("No module named 'peft.tuners'", name='peft.tuners')
        except ImportError as exc:
            raise ModelLoadError('cannot load the LoRA adapter') from exc
    except ModelLoadError as exc:
        text = describe_error(exc)
    assert text.startswith('cannot load the LoRA adapter') and 'pip install peft' in text
    assert 'pip install -U transformers' in install_hint(
        ImportError('cannot import name X', name='transformers'))
    assert 'audio-common-msgs' in install_hint(
        ModuleNotFoundError('x', name='audio_common_msgs.msg'))
    hint = install_hint(ModuleNotFoundError('x', name='mediapipe'))
    assert 'pip install --no-deps mediapipe==0.10.21' in hint
    assert 'requirements-nodeps.txt' in hint
    assert install_hint(ValueError('x')) == ''


def test_standing_conditions_set_the_level_until_cleared(graph):
    """A WARN condition (e.g. a fallback detector) shows for as long as it is set."""
    node = graph.add(rclpy.create_node('health_cond', context=graph.ctx))
    health = NodeHealth(node)
    health.set_condition('detector', DiagnosticStatus.WARN, 'fallback: hidden faces unseen')
    assert health.status() == (DiagnosticStatus.WARN, 'fallback: hidden faces unseen')
    assert health.status(DiagnosticStatus.WARN, 'no input')[1] == \
        'no input; fallback: hidden faces unseen'
    assert health.values()['condition.detector'] == 'fallback: hidden faces unseen'
    health.clear_condition('detector')
    assert health.status() == (DiagnosticStatus.OK, 'ok')


def _set(node, **values):
    return node.set_parameters_atomically([Parameter(k, value=v) for k, v in values.items()])


def test_live_parameters_are_validated_against_the_full_new_set(graph):
    """Related thresholds change together in one atomic call; a call that breaks a cross-field
    rule is refused naming it; every accepted change reaches on_change as a rebuilt config."""
    node = graph.add(rclpy.create_node('params_live', context=graph.ctx))
    applied = []
    config = declare_config(node, Thresholds, on_change=applied.append)
    assert config == Thresholds()
    result = _set(node, high=0.95, low=0.8)
    assert result.successful, result.reason
    assert applied[-1] == Thresholds(low=0.8, high=0.95)
    result = _set(node, low=0.99)
    assert not result.successful and 'low (0.99) must be <= high (0.95)' in result.reason
    assert node.get_parameter('low').value == 0.8 and len(applied) == 1
    # One at a time in an order that passes through an invalid pair fails; atomic works.
    assert not _set(node, high=0.2).successful
    assert _set(node, low=0.1, high=0.2).successful
    assert applied[-1] == Thresholds(low=0.1, high=0.2)
    result = _set(node, low=1.5)
    assert not result.successful and 'low' in result.reason and '<= 1.0' in result.reason
    assert not _set(node, label=3).successful
    assert reload_config(node, Thresholds) == applied[-1]


def test_a_change_on_change_cannot_apply_is_refused(graph):
    """When on_change raises, the change is refused with its reason and nothing changes."""
    node = graph.add(rclpy.create_node('params_refuse', context=graph.ctx))

    def apply(config):
        if config.label == 'x':
            raise RuntimeError('cannot reopen the device')
    declare_config(node, Thresholds, on_change=apply)
    result = _set(node, label='x')
    assert not result.successful and 'cannot reopen the device' in result.reason
    assert node.get_parameter('label').value == 'a'


def test_parameters_without_on_change_are_read_only(graph):
    """Without on_change every parameter is read-only in its descriptor and changes are
    refused by rclpy; start-up overrides still work."""
    node = graph.add(rclpy.create_node(
        'params_ro', context=graph.ctx, parameter_overrides=[Parameter('low', value=0.2)]))
    config = declare_config(node, Thresholds)
    assert config.low == 0.2
    descriptor = node.describe_parameter('high')
    assert descriptor.read_only and 'Read-only' in descriptor.description
    result = _set(node, high=0.9)
    assert not result.successful and 'read-only' in result.reason
    assert node.get_parameter('high').value == 0.6


def test_read_only_and_at_configure_parameters(graph):
    """Listed parameters stay read-only; at-configure ones are refused while configured and
    accepted (and delivered) when not."""
    node = graph.add(rclpy.create_node('params_mixed', context=graph.ctx))
    configured = [True]
    applied = []
    declare_config(node, Thresholds, on_change=applied.append, read_only=('label',),
                   at_configure=('high',), is_configured=lambda: configured[0])
    assert node.describe_parameter('label').read_only
    assert 'next configure' in node.describe_parameter('high').description
    assert not node.describe_parameter('low').read_only
    result = _set(node, high=0.9)
    assert not result.successful and 'clean it up first' in result.reason
    assert _set(node, low=0.5).successful and applied[-1].low == 0.5
    configured[0] = False
    assert _set(node, high=0.9).successful and applied[-1].high == 0.9
    assert not _set(node, label='b').successful


def test_run_node_passes_its_args(tmp_path):
    """main(args) hands its --ros-args to rclpy.init: a bad parameter given only through args
    stops the node with a message naming it (exit 2)."""
    code = ('import sys; sys.argv = ["mic"]; from emotion_ros.ros.microphone_node import main; '
            'main(["mic", "--ros-args", "-p", "chunk_ms:=5"])')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=dict(os.environ))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'chunk_ms' in proc.stdout + proc.stderr
