"""Helpers every node uses: the error boundary, parameters from config dataclasses,
bad-input log, diagnostics.

Error boundary (one per node): :class:`NodeHealth` counts the exceptions that
reach a node's edge per site (subscription, timer, service, transition), logs
each traceback once (later repeats rate-limited), and turns the node's
/diagnostics status to ERROR with the reason. :func:`boundary` (for methods)
and :meth:`NodeHealth.wrap` (for any callable) put a callback behind it; they
return the right failure value for the site (``FAILURE`` for a lifecycle
transition, ``success=False`` + ``message`` for a service, ``None`` else).

Run-time parameters: :func:`declare_config` declares one parameter per config
field. With ``on_change`` a change is validated against the full new set and
the node receives the rebuilt frozen config; without it the parameters are
read-only. Nothing is accepted and ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Type, TypeVar

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.executors import (ConditionReachedException, ExternalShutdownException,
                             MultiThreadedExecutor, ShutdownException, TimeoutException)
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from emotion_ros.config import defaults, flatten, from_mapping
from emotion_ros.errors import ConfigError, EmotionRosError

T = TypeVar('T')

# ------------------------------------------------------------------ missing dependencies
#: Import name -> pip package, for modules whose pip name differs or that are optional.
PIP_PACKAGES = {
    'absl': 'absl-py',
    'accelerate': 'accelerate',
    'ai_edge_litert': 'ai-edge-litert',
    'cv2': 'opencv-python-headless',
    'facex': 'facex==1.1.0',
    'flatbuffers': 'flatbuffers',
    'google': 'protobuf',
    'matplotlib': 'matplotlib',
    'mediapipe': 'mediapipe==0.10.21',
    'peft': 'peft',
    'PIL': 'pillow',
    'pi_heif': 'pi-heif',
    'pocketsphinx': 'pocketsphinx==5.1.1',
    'polars': 'polars',
    'psutil': 'psutil',
    'rosbags': 'rosbags',
    'scipy': 'scipy',
    'silero_vad': 'silero-vad',
    'skimage': 'scikit-image',
    'sklearn': 'scikit-learn',
    'sounddevice': 'sounddevice',
    'tokenizers': 'tokenizers',
    'torch': 'torch',
    'torchvision': 'torchvision',
    'transformers': 'transformers',
    'ultralytics': 'ultralytics',
    'yaml': 'pyyaml',
}
#: Installed with --no-deps (requirements-nodeps.txt): a plain pip install would break others.
NO_DEPS = ('ultralytics', 'mediapipe', 'facex', 'absl', 'flatbuffers', 'google')
#: Modules that come from ROS packages, not pip: the hint names the ROS package.
ROS_PACKAGES = {
    'audio_common_msgs': 'audio_common_msgs',
    'tf2_ros': 'tf2_ros',
    'tf2_geometry_msgs': 'tf2_geometry_msgs',
    'vision_msgs': 'vision_msgs',
    'hri_msgs': 'hri_msgs',
}


def _import_error_in_chain(exc: BaseException) -> Optional[ImportError]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def install_hint(exc: BaseException) -> str:
    """What to install when ``exc`` (or an error it was raised from) is an ImportError.

    Returns '' when no ImportError is involved. Example:
    ``missing Python module 'peft': install it with `pip install peft```.
    """
    err = _import_error_in_chain(exc)
    if err is None:
        return ''
    module = (getattr(err, 'name', None) or '').split('.')[0]
    if not module:
        return f'an import failed ({err}); check the installed versions (requirements*.txt)'
    if module in ROS_PACKAGES:
        return (f"missing ROS package for module '{module}': install "
                f'ros-<distro>-{ROS_PACKAGES[module].replace("_", "-")} (or build it)')
    pip = PIP_PACKAGES.get(module, module.replace('_', '-'))
    if module in NO_DEPS:
        return (f"missing Python module '{module}': install it with `pip install --no-deps "
                f'{pip}` (all of them: `pip install --no-deps -r requirements-nodeps.txt`)')
    if isinstance(err, ModuleNotFoundError):
        return f"missing Python module '{module}': install it with `pip install {pip}`"
    return (f"cannot import from '{module}' ({err}): its installed version does not fit; "
            f'`pip install -U {pip}` (see requirements*.txt)')


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong, with the package to install for an ImportError."""
    text = f'{type(exc).__name__}: {exc}' if not isinstance(exc, EmotionRosError) else str(exc)
    hint = install_hint(exc)
    if hint and hint not in text:
        text = f'{text} ({hint})'
    return text


# ------------------------------------------------------------------ error boundary
SITES = ('subscription', 'timer', 'service', 'transition', 'worker')


class NodeHealth:
    """Counts a node's errors per site, keeps the reason, and decides its diagnostics level.

    Levels (what :class:`Diagnostics` publishes):

    - ERROR while a fatal error stands (a failed lifecycle transition, or one set
      with :meth:`set_fatal`) until it is cleared (next successful transition or
      :meth:`clear_fatal`);
    - ERROR for ``recover_s`` seconds after the last non-fatal error (an exception
      in a callback, timer or service), then back to what the node reports;
    - at least the level of any standing condition (:meth:`set_condition`, e.g.
      WARN while a fallback detector runs) until :meth:`clear_condition`.

    Counters never reset: ``errors_total`` and ``errors.<site>.<name>``.
    """

    def __init__(self, node: Node, recover_s: float = 30.0, log_period_s: float = 10.0) -> None:
        self._node = node
        self.recover_s = recover_s
        self.log_period_s = log_period_s
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = {}
        self.last_reason = ''
        self._last_error_time = -1e18
        self._fatal: Dict[str, str] = {}
        self._conditions: Dict[str, Tuple[int, str]] = {}
        self._logged: Dict[Tuple[str, str], float] = {}
        self._suppressed: Dict[str, int] = {}

    # -- recording
    def record(self, site: str, name: str, exc: BaseException, fatal: bool = False) -> str:
        """Count ``exc`` at ``site``/``name``, log it (traceback once), return its reason."""
        key = f'{site}.{name}'
        where = f'{name} failed' if site == 'transition' else f'{site} {name} failed'
        reason = f'{where}: {describe_error(exc)}'
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            count = self.counts[key]
            self.last_reason = reason
            self._last_error_time = time.monotonic()
            if fatal:
                self._fatal[key] = reason
            first_of_kind = (key, type(exc).__name__) not in self._logged
            last_log = max((t for (k, _), t in self._logged.items() if k == key), default=-1e18)
            now = time.monotonic()
            due = now - last_log >= self.log_period_s
            if first_of_kind or due:
                self._logged[(key, type(exc).__name__)] = now
                suppressed = self._suppressed.pop(key, 0)
            else:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
        if first_of_kind or due:
            logger = self._node.get_logger()
            more = f' ({suppressed} more since the last report)' if suppressed else ''
            if first_of_kind and not isinstance(exc, EmotionRosError):
                tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                logger.error(f'{reason} [error {count} here]{more}\n{tb.rstrip()}')
            else:
                logger.error(f'{reason} [error {count} here]{more}')
        return reason

    def set_fatal(self, key: str, reason: str) -> None:
        """Hold ERROR with ``reason`` until :meth:`clear_fatal` (e.g. configure failed)."""
        with self._lock:
            self._fatal[key] = reason
            self.last_reason = reason
            self.counts.setdefault(key, 0)
        self._node.get_logger().error(reason)

    def clear_fatal(self, prefix: str = '') -> None:
        """Drop the fatal errors whose key starts with ``prefix`` (all by default)."""
        with self._lock:
            for key in [k for k in self._fatal if k.startswith(prefix)]:
                del self._fatal[key]

    def set_condition(self, key: str, level: int, message: str) -> None:
        """A standing state (e.g. WARN 'fallback detector') shown until cleared."""
        with self._lock:
            changed = self._conditions.get(key) != (level, message)
            self._conditions[key] = (level, message)
        if changed:
            log = self._node.get_logger()
            (log.error if level >= DiagnosticStatus.ERROR else log.warning)(message)

    def clear_condition(self, key: str) -> None:
        """End a standing state set with :meth:`set_condition`."""
        with self._lock:
            self._conditions.pop(key, None)

    # -- reading
    @property
    def total(self) -> int:
        """All errors counted so far."""
        return sum(self.counts.values())

    @property
    def fatal(self) -> bool:
        """True while a fatal error stands."""
        return bool(self._fatal)

    def status(self, level: int = DiagnosticStatus.OK, message: str = 'ok'
               ) -> Tuple[int, str]:
        """The diagnostics level and message, given what the node itself reports."""
        with self._lock:
            if self._fatal:
                return DiagnosticStatus.ERROR, '; '.join(self._fatal.values())
            if time.monotonic() - self._last_error_time < self.recover_s:
                if level >= DiagnosticStatus.ERROR:
                    return level, message  # the node's own ERROR says more
                return DiagnosticStatus.ERROR, self.last_reason
            for cond_level, cond_message in sorted(self._conditions.values(), reverse=True):
                if cond_level > level:
                    level, message = cond_level, cond_message
                elif cond_level == level and level > DiagnosticStatus.OK:
                    message = f'{message}; {cond_message}' if message else cond_message
                break
            return level, message

    def values(self) -> Dict[str, Any]:
        """Counters for /diagnostics."""
        with self._lock:
            out: Dict[str, Any] = {'errors_total': sum(self.counts.values())}
            out.update({f'errors.{k}': v for k, v in sorted(self.counts.items())})
            if self.last_reason:
                out['last_error'] = self.last_reason
            for key, (_, message) in sorted(self._conditions.items()):
                out[f'condition.{key}'] = message
            return out

    # -- wrapping
    def wrap(self, fn: Callable, site: str, name: Optional[str] = None,
             fatal: Optional[bool] = None) -> Callable:
        """``fn`` behind the boundary: exceptions are counted, logged and turned into the
        site's failure value (see :func:`boundary`)."""
        return _guard(fn, lambda: self, site, name, fatal)


def _failure_value(site: str, args: tuple) -> Any:
    if site == 'transition':
        from rclpy.lifecycle import TransitionCallbackReturn
        return TransitionCallbackReturn.FAILURE
    if site == 'service' and args:
        return args[-1]  # the response, with success/message set by the caller
    return None


def _guard(fn: Callable, get_health: Callable[..., Optional[NodeHealth]], site: str,
           name: Optional[str], fatal: Optional[bool], method: bool = False) -> Callable:
    if site not in SITES:
        raise ValueError(f'site must be one of {SITES}, got {site!r}')
    label = name or fn.__name__.lstrip('_')
    if site == 'transition' and label.startswith('on_'):
        label = label[3:]
    is_fatal = (site == 'transition') if fatal is None else fatal

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        health = get_health(*args) if method else get_health()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: B902 - this is the boundary: everything is caught
            if health is None:
                raise
            reason = health.record(site, label, exc, fatal=is_fatal)
            failure = _failure_value(site, args)
            if site == 'service' and failure is not None:
                if hasattr(failure, 'success'):
                    failure.success = False
                if hasattr(failure, 'message'):
                    failure.message = reason
            return failure
        if site == 'transition' and health is not None:
            from rclpy.lifecycle import TransitionCallbackReturn
            if result == TransitionCallbackReturn.SUCCESS:
                health.clear_fatal('transition.')
        return result
    return guarded


def boundary(site: str, name: Optional[str] = None, fatal: Optional[bool] = None) -> Callable:
    """Decorate a node method so that exceptions stop at the node's edge.

    The node must have a ``health`` attribute (:class:`NodeHealth`). ``site`` is one
    of ``subscription``, ``timer``, ``service``, ``transition`` or ``worker``. On an
    exception the wrapper counts and logs it and returns: ``FAILURE`` for a
    transition (and holds ERROR until a transition succeeds), the response with
    ``success=False`` and ``message`` set for a service, ``None`` otherwise.
    ``fatal`` overrides whether the error holds ERROR until cleared (default: only
    for transitions).
    """
    def decorate(fn: Callable) -> Callable:
        return _guard(fn, lambda self, *a: getattr(self, 'health', None), site, name, fatal,
                      method=True)
    return decorate


# ------------------------------------------------------------------ parameters
READ_ONLY_NOTE = ' Read-only at run time (set it at start-up: YAML or --ros-args).'
AT_CONFIGURE_NOTE = (' Takes effect at the next configure; refused while the node is '
                     'configured (deactivate and clean up first).')


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` is one of ``patterns`` or under one ending in '.'."""
    return any(name == p or (p.endswith('.') and name.startswith(p)) for p in patterns)


def declare_config(node: Node, cls: Type[T], on_change: Optional[Callable[[T], None]] = None,
                   *, read_only: Iterable[str] = (), at_configure: Iterable[str] = (),
                   is_configured: Optional[Callable[[], bool]] = None) -> T:
    """Declare one ROS parameter per config field (with its description) and read them.

    Run-time changes are never accepted and ignored:

    - without ``on_change`` every parameter is declared read-only (rclpy refuses
      a change with "Trying to set a read-only parameter");
    - with ``on_change`` a change (one parameter, or several in one
      ``set_parameters_atomically`` call) is validated against the FULL new set
      (current values + every change of the call), so cross-field rules see the
      related values together; when valid, ``on_change(new_config)`` receives the
      rebuilt frozen config and the node swaps it in. If ``on_change`` raises,
      the change is refused with that reason and nothing is changed;
    - names in ``read_only`` (exact, or prefixes ending in '.') stay read-only;
    - names in ``at_configure`` are only read at (re)configure by a lifecycle
      node: they are refused while ``is_configured()`` is true and accepted when
      it is false (the node picks them up with :func:`reload_config`).

    The descriptor's description says which kind each parameter is.

    Raises:
        ConfigError: when the start-up values are invalid (naming the parameter).
    """
    fields = flatten(cls)
    values = defaults(cls)
    read_only = tuple(read_only)
    at_configure = tuple(at_configure)
    kinds: Dict[str, str] = {}
    for name, f in fields.items():
        default = values.get(name)
        if isinstance(default, tuple):
            default = list(default)
        description = f.metadata.get('description', '')
        if on_change is None or _matches(name, read_only):
            kinds[name] = 'read_only'
            description += READ_ONLY_NOTE
        elif _matches(name, at_configure):
            kinds[name] = 'at_configure'
            description += AT_CONFIGURE_NOTE
        else:
            kinds[name] = 'live'
        # Dynamic typing: our validation gives a clearer error than rclpy's type check.
        descriptor = ParameterDescriptor(description=description, dynamic_typing=True,
                                         read_only=kinds[name] == 'read_only')
        if 'choices' in f.metadata:
            descriptor.additional_constraints = f'one of {list(f.metadata["choices"])}'
        node.declare_parameter(name, default, descriptor)
    config = from_mapping(cls, read_parameters(node, fields))
    if on_change is None:
        return config
    lock = threading.Lock()

    def validate(params: Any) -> SetParametersResult:
        ours = [p for p in params if p.name in fields]
        if not ours:
            return SetParametersResult(successful=True)
        names = [p.name for p in ours]
        deferred = [n for n in names if kinds[n] == 'at_configure']
        if deferred and is_configured is not None and is_configured():
            reason = (f'{", ".join(deferred)}: take(s) effect at configure; the node is '
                      'configured: deactivate and clean it up first, then set and configure')
            node.get_logger().warning(f'refused parameter change: {reason}')
            return SetParametersResult(successful=False, reason=reason)
        with lock:
            current = read_parameters(node, fields)
            for p in ours:
                if p.type_ == p.Type.NOT_SET:
                    return SetParametersResult(successful=False,
                                               reason=f'{p.name}: cannot be undeclared')
                current[p.name] = _plain(p.value)
            try:
                new_config = from_mapping(cls, current)
            except ConfigError as exc:
                node.get_logger().error(f'rejected parameter change: {exc}')
                return SetParametersResult(successful=False, reason=str(exc))
            try:
                on_change(new_config)
            except Exception as exc:  # noqa: B902 - refuse the change with the reason
                reason = f'{", ".join(names)}: could not apply: {describe_error(exc)}'
                node.get_logger().error(f'rejected parameter change: {reason}')
                return SetParametersResult(successful=False, reason=reason)
        changes = ', '.join(f'{p.name}={_plain(p.value)!r}' for p in ours)
        when = ' (takes effect at the next configure)' if deferred else ''
        node.get_logger().info(f'parameters changed: {changes}{when}')
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    return config


def reload_config(node: Node, cls: Type[T]) -> T:
    """Read the already declared parameters of ``cls`` again (at configure)."""
    return from_mapping(cls, read_parameters(node, flatten(cls)))


def read_parameters(node: Node, fields: Dict[str, dataclasses.Field]) -> Dict[str, Any]:
    """Current values of the declared parameters as a flat mapping."""
    return {name: _plain(node.get_parameter(name).value) for name in fields}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return list(value)
    return value


def reliability_qos(reliability: str, depth: int) -> QoSProfile:
    """A QoS profile with the named reliability ('reliable' or 'best_effort')."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE)


class BadInputLog:
    """Counts bad inputs per kind and logs each kind at most once per ``period_s``."""

    def __init__(self, node: Node, period_s: float = 5.0) -> None:
        self._node = node
        self._period = period_s
        self.counts: Dict[str, int] = {}
        self._last_log: Dict[str, float] = {}

    def report(self, kind: str, message: str) -> None:
        """Count one bad input of ``kind`` and log it (rate-limited per kind)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last_log.get(kind, -1e9) >= self._period:
            self._last_log[kind] = now
            self._node.get_logger().warning(
                f'bad input ({kind}, {self.counts[kind]} so far): {message}')

    @property
    def total(self) -> int:
        """All bad inputs counted so far."""
        return sum(self.counts.values())


class RateMeter:
    """Events per second over a sliding window of wall-clock time."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window = window_s
        self._times: list = []

    def tick(self) -> None:
        """Record one event now."""
        now = time.monotonic()
        self._times.append(now)
        cutoff = now - self._window
        while self._times and self._times[0] < cutoff:
            self._times.pop(0)

    @property
    def rate(self) -> float:
        """Events per second in the window."""
        now = time.monotonic()
        recent = [t for t in self._times if t >= now - self._window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class Diagnostics:
    """Publishes one DiagnosticStatus of a node on /diagnostics.

    With a :class:`NodeHealth` (given, or the node's ``health`` attribute) the
    published level is raised to what the health says (ERROR with the reason
    after an error, WARN for standing conditions) and its counters are added.
    """

    def __init__(self, node: Node, name: str, health: Optional[NodeHealth] = None) -> None:
        self._node = node
        self._name = name
        self._health = health
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def publish(self, values: Dict[str, Any], level: int = DiagnosticStatus.OK,
                message: str = 'ok', bad_inputs: Optional[BadInputLog] = None) -> None:
        """Publish the given key/values (plus bad-input and error counters)."""
        items = dict(values)
        if bad_inputs is not None:
            items['bad_inputs_total'] = bad_inputs.total
            for kind, count in sorted(bad_inputs.counts.items()):
                items[f'bad_input.{kind}'] = count
            if bad_inputs.total and level == DiagnosticStatus.OK:
                message = f'ok ({bad_inputs.total} bad inputs dropped)'
        health = self._health or getattr(self._node, 'health', None)
        if isinstance(health, NodeHealth):
            items.update(health.values())
            level, message = health.status(level, message)
        status = DiagnosticStatus(
            level=level, name=self._name, message=message,
            hardware_id=self._node.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=_fmt(v)) for k, v in items.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(array)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


class NodeExecutor(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor without re-queueing a callback that is already queued.

    rclpy's wait loop hands out again every task that has been created but has not
    started yet, and returns at once while one exists (ros2/rclpy#1452; fixed in
    rclpy's rolling branch by ros2/rclpy#1547, present in Kilted's rclpy 9.1.2 that
    we run). The stock executor submits each of
    those hand-outs to its thread pool again, so a callback waiting for a free worker
    is queued over and over by a spinning main thread that holds the GIL and starves
    the workers: in the 60-minute soak the perception node fell from its 5 Hz cap to
    3-4.5 Hz whenever the machine was otherwise idle (docs/benchmarks.md). Here a
    task already waiting in the pool is not submitted again; the main thread yields
    briefly instead, so a worker can take it. ``submitted`` counts submissions,
    ``requeues_avoided`` the hand-outs that were not submitted again.
    """

    def __init__(self, num_threads: int = 2, **kwargs: Any) -> None:
        """A pool of ``num_threads`` workers (``kwargs`` go to MultiThreadedExecutor)."""
        super().__init__(num_threads=num_threads, **kwargs)
        self.submitted = 0
        self.requeues_avoided = 0

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None,
                                                                    wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            return
        if any(handler is queued for queued in self._futures):
            self.requeues_avoided += 1
            time.sleep(0.0005)  # give the GIL to the worker that is about to take it
        else:
            self.submitted += 1
            self._executor.submit(handler)
            self._futures.append(handler)
        for future in [f for f in self._futures if f.done() or f.cancelled()]:
            self._futures.remove(future)
            if not future.cancelled():
                future.result()  # raise what the callback raised


def run_node(factory, num_threads: int = 2, before_spin=None, args=None) -> None:
    """Spin a node built by ``factory`` with a multi-threaded executor; exit 2 if it cannot start.

    ``args`` are the command-line arguments given to ``rclpy.init`` (``None``: sys.argv),
    so ``main(args)`` of every node passes its ``--ros-args`` through.
    ``before_spin(node)`` runs once the node is in the executor (e.g. lifecycle autostart).
    """
    rclpy.init(args=args)
    try:
        node = factory()
    except Exception as exc:  # noqa: B902 - report why the node cannot start, then exit
        name = getattr(factory, '__name__', str(factory))
        logger = rclpy.logging.get_logger('emotion_ros')
        if isinstance(exc, EmotionRosError) or install_hint(exc):
            logger.fatal(f'{name} cannot start: {describe_error(exc)}')
        else:
            tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            logger.fatal(f'{name} cannot start: {describe_error(exc)}\n{tb.rstrip()}')
        rclpy.try_shutdown()
        sys.exit(2)
    executor = NodeExecutor(num_threads=num_threads)
    executor.add_node(node)
    try:
        if before_spin is not None:
            before_spin(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
