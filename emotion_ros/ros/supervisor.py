"""Run the node graph of :mod:`emotion_ros.ros.graph` as child processes (``emotion-ros up``).

What ``ros2 launch`` does for robot.launch.py, where there is no ``ros2 launch`` (a pip
install): start every node of the description with its name, namespace, remappings and
parameters file; bring each managed (lifecycle) node to ``active`` through its
``change_state`` service (configure, then activate); write each node's output to
``<log dir>/<node>.log`` (and to the screen with a ``[node]`` prefix); forward
Ctrl-C / SIGTERM to the children and stop them cleanly (SIGINT, then SIGTERM, then
SIGKILL after ``stop_timeout_s``); exit non-zero naming the node when one exits or
cannot be brought to active during the start, or exits later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, TextIO

from emotion_ros.errors import EmotionRosError
from emotion_ros.ros.graph import NodeSpec


class GraphError(EmotionRosError):
    """A node of the graph died or could not be brought up (the message names it)."""


def log_name(spec: NodeSpec) -> str:
    """File name of a node's log: '/cam_left/perception_node' -> 'cam_left.perception_node.log'."""
    return spec.fqn.strip('/').replace('/', '.') + '.log'


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when `up` dies without stopping it (SIGKILL).

    The children have sessions of their own (a Ctrl-C in the terminal reaches `up` only,
    which stops them in order), so without this they would outlive a killed `up`. Linux
    only; elsewhere a no-op.
    """
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Child:
    """One node process, its output copied to its log file (and the screen)."""

    def __init__(self, spec: NodeSpec, log_dir: Path, echo: Optional[TextIO]) -> None:
        self.spec = spec
        self.log_path = log_dir / log_name(spec)
        self._log = open(self.log_path, 'w', buffering=1)
        self._echo = echo
        self.proc = subprocess.Popen(spec.command(sys.executable), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, text=True, errors='replace',
                                     preexec_fn=_die_with_parent)
        self._tail: List[str] = []
        self._reader = threading.Thread(target=self._copy, daemon=True,
                                        name=f'log {spec.fqn}')
        self._reader.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        prefix = f'[{self.spec.fqn.lstrip("/")}] '
        for line in self.proc.stdout:
            self._log.write(line)
            self._tail = (self._tail + [line.rstrip('\n')])[-20:]
            if self._echo is not None:
                self._echo.write(prefix + line)
                self._echo.flush()

    def tail(self) -> str:
        """The last lines the node printed."""
        return '\n'.join(self._tail)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the node's process group (if it still runs)."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Wait for the output copier and close the log."""
        self._reader.join(timeout=2.0)
        self._log.close()


class Supervisor:
    """Starts, brings up, watches and stops the nodes of a graph description."""

    def __init__(self, specs: List[NodeSpec], log_dir: Path, echo: Optional[TextIO] = None,
                 startup_timeout_s: float = 180.0, stop_timeout_s: float = 10.0,
                 say: Callable[[str], None] = print) -> None:
        self.specs = specs
        self.log_dir = Path(log_dir)
        self.echo = echo
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.say = say
        self.children: Dict[str, _Child] = {}
        self._stop = threading.Event()
        self.stop_signal = 0

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        """Start every node and bring the managed ones to active.

        Raises:
            GraphError: naming the node that exited or failed a transition.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            self.children[spec.fqn] = _Child(spec, self.log_dir, self.echo)
        managed = [s for s in self.specs if s.lifecycle]
        if managed:
            self._bring_up(managed)

    def _check_alive(self, when: str) -> None:
        for child in self.children.values():
            code = child.proc.poll()
            if code is not None:
                raise GraphError(f'{child.spec.fqn} exited with code {code} {when} (log: '
                                 f'{child.log_path}); its last lines:\n{child.tail()}')

    def _bring_up(self, managed: List[NodeSpec]) -> None:
        import rclpy
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        from rclpy.signals import SignalHandlerOptions
        context = rclpy.Context()
        # Our own SIGINT/SIGTERM handlers stop the graph; rclpy's would only end this client.
        rclpy.init(context=context, args=[], signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node('emotion_ros_up', context=context)
        from rclpy.executors import SingleThreadedExecutor
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            for spec in managed:
                client = node.create_client(ChangeState, f'{spec.fqn}/change_state')
                while not client.service_is_ready():
                    self._wait_step(executor, deadline, spec, 'to offer change_state')
                for transition, label in ((Transition.TRANSITION_CONFIGURE, 'configure'),
                                          (Transition.TRANSITION_ACTIVATE, 'activate')):
                    future = client.call_async(ChangeState.Request(
                        transition=Transition(id=transition)))
                    while not future.done():
                        self._wait_step(executor, deadline, spec, f'to {label}')
                    if not future.result().success:
                        raise GraphError(
                            f'{spec.fqn} failed to {label} (its /diagnostics and log say why:'
                            f' {self.children[spec.fqn].log_path}); its last lines:\n'
                            f'{self.children[spec.fqn].tail()}')
                self.say(f'[up] {spec.fqn} is active')
        finally:
            node.destroy_node()
            executor.shutdown()
            rclpy.try_shutdown(context=context)

    def _wait_step(self, executor, deadline: float, spec: NodeSpec, what: str) -> None:
        if self._stop.is_set():
            raise GraphError(f'stopped while waiting for {spec.fqn} {what}')
        self._check_alive('during the start')
        if time.monotonic() > deadline:
            raise GraphError(f'{spec.fqn} did not come up within {self.startup_timeout_s:.0f} '
                             f's (waiting for it {what}; log: '
                             f'{self.children[spec.fqn].log_path})')
        executor.spin_once(timeout_sec=0.1)

    # ---------------------------------------------------------------- run
    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Ask :meth:`wait` (or the start) to return; the children are stopped after."""
        self.stop_signal = signum
        self._stop.set()

    def wait(self) -> None:
        """Block until a stop is requested.

        Raises:
            GraphError: when a node exits on its own (naming it).
        """
        while not self._stop.wait(0.2):
            self._check_alive('while running')

    def stop(self) -> Dict[str, Optional[int]]:
        """Stop every child: SIGINT, then SIGTERM and SIGKILL after ``stop_timeout_s`` each.

        Returns the exit code of every node.
        """
        escalation = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
        for sig in escalation:
            running = [c for c in self.children.values() if c.alive()]
            if not running:
                break
            if sig != signal.SIGINT:
                self.say(f'[up] {", ".join(c.spec.fqn for c in running)} still running: '
                         f'sending {signal.Signals(sig).name}')
            for child in running:
                child.signal(sig)
            deadline = time.monotonic() + self.stop_timeout_s
            while time.monotonic() < deadline and any(c.alive() for c in running):
                time.sleep(0.05)
        codes = {}
        for fqn, child in self.children.items():
            try:
                codes[fqn] = child.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                codes[fqn] = None
            child.close()
        return codes


# ------------------------------------------------------------ emotion-ros up
def default_log_dir() -> Path:
    """``$ROS_LOG_DIR`` (else ``$ROS_HOME/log``, else ``~/.ros/log``) / ``up-<time>``."""
    base = os.environ.get('ROS_LOG_DIR') or os.path.join(
        os.environ.get('ROS_HOME') or os.path.expanduser('~/.ros'), 'log')
    return Path(base) / time.strftime('up-%Y%m%d-%H%M%S')


def setup_up(parser) -> None:
    """Arguments of ``emotion-ros up``."""
    import argparse

    from emotion_ros.ros.graph import ARGUMENTS
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ('graph arguments (name:=value, as for ros2 launch emotion_ros '
                     'robot.launch.py):\n' + '\n'.join(
                         f'  {a.name} (default {a.default!r}): {a.description}'
                         for a in ARGUMENTS)
                     + '\n\nExample: emotion-ros up cameras:=cam_left,cam_right '
                     'use_microphone:=false')
    parser.add_argument('assignments', nargs='*', metavar='name:=value',
                        help='graph arguments (listed below)')
    parser.add_argument('--log-dir', default=None,
                        help='folder for the node logs (default: $ROS_LOG_DIR/up-<time>)')
    parser.add_argument('--startup-timeout', type=float, default=180.0,
                        help='seconds for the managed nodes to load their models and become '
                        'active (default: %(default)s)')
    parser.add_argument('--stop-timeout', type=float, default=10.0,
                        help='seconds a node gets to stop before the next, harder signal '
                        '(default: %(default)s)')
    parser.add_argument('--quiet', action='store_true',
                        help="do not copy the nodes' output to the screen (logs only)")
    parser.add_argument('--dry-run', action='store_true',
                        help='print the graph (nodes, namespaces, remappings, parameters '
                        'files, commands) as JSON and exit')
    parser.set_defaults(handler=run_up)


def run_up(args) -> int:
    """``emotion-ros up``: run the graph until Ctrl-C / SIGTERM or a node dies."""
    import json

    from emotion_ros.ros.graph import find_default_params_file, nodes, parse_assignments
    try:
        given = parse_assignments(args.assignments)
        specs = nodes(given, default_params_file=find_default_params_file(
            ['config/robot.yaml']))
    except ValueError as exc:
        raise EmotionRosError(str(exc)) from None
    for spec in specs:
        for path in spec.parameters:
            if not Path(path).is_file():
                raise EmotionRosError(f'parameters file {path} does not exist')
    if not any(spec.parameters for spec in specs):
        raise EmotionRosError('no parameters file: give params_file:=PATH (config/robot.yaml '
                              'of the package was not found)')
    if args.dry_run:
        print(json.dumps([dict(spec.as_dict(), command=spec.command(sys.executable))
                          for spec in specs], indent=2))
        return 0
    log_dir = Path(args.log_dir) if args.log_dir else default_log_dir()
    for var in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        if var not in os.environ:
            print(f'[up] note: {var} is not set (the ROS 2 default applies)', flush=True)
    say = _printer()
    supervisor = Supervisor(specs, log_dir, echo=None if args.quiet else sys.stdout,
                            startup_timeout_s=args.startup_timeout,
                            stop_timeout_s=args.stop_timeout, say=say)
    say(f'[up] starting {len(specs)} nodes ({", ".join(s.fqn for s in specs)}) on '
        f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0 (default)")}; logs: {log_dir}')
    previous = {sig: signal.signal(sig, lambda signum, _frame: supervisor.request_stop(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    failure: Optional[GraphError] = None
    try:
        supervisor.start()
        say('[up] the graph is up; Ctrl-C stops it')
        supervisor.wait()
    except GraphError as exc:
        if not supervisor.stop_signal:
            failure = exc
    finally:
        if supervisor.stop_signal:
            say(f'[up] {signal.Signals(supervisor.stop_signal).name}: stopping the nodes')
        codes = supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure is not None:
        print(f'emotion-ros up: error: {failure}', file=sys.stderr, flush=True)
        print(f'emotion-ros up: stopped the other nodes; logs: {log_dir}', file=sys.stderr,
              flush=True)
        return 1
    unclean = {fqn: code for fqn, code in codes.items() if code not in (0, -signal.SIGINT)}
    if unclean:
        say(f'[up] stopped; not cleanly: {unclean}; logs: {log_dir}')
        return 1
    say(f'[up] stopped; logs: {log_dir}')
    return 0


def _printer() -> Callable[[str], None]:
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(text, flush=True)
    return say
