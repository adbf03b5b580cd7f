"""The executor every node spins in, and the ``main()`` helper that runs a node.

:class:`NodeExecutor` is rclpy's multi-threaded executor without its re-submission
of queued-but-not-started tasks (ros2/rclpy#1452); see docs/architecture.md.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any, Dict

import rclpy
from rclpy.executors import (ConditionReachedException, ExternalShutdownException,
                             MultiThreadedExecutor, ShutdownException, TimeoutException)

from emotion_ros.errors import EmotionRosError
from emotion_ros.ros.health import describe_error, install_hint, NodeHealth


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

    A callback that raises does not end the node (rclpy's executor re-raises it from
    ``spin``): the exception goes to the node's :class:`NodeHealth` (counted under
    ``errors.callback.unwrapped``, ERROR in /diagnostics) and spinning goes on.
    """

    def __init__(self, num_threads: int = 2, **kwargs: Any) -> None:
        """A pool of ``num_threads`` workers (``kwargs`` go to MultiThreadedExecutor)."""
        super().__init__(num_threads=num_threads, **kwargs)
        self.submitted = 0
        self.requeues_avoided = 0
        #: Exceptions that escaped a callback (counted and recorded; the node keeps running).
        self.callback_errors = 0
        self._nodes_of: Dict[int, Any] = {}

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
            self._nodes_of[id(handler)] = _node
        for future in [f for f in self._futures if f.done() or f.cancelled()]:
            self._futures.remove(future)
            node = self._nodes_of.pop(id(future), None)
            if future.cancelled():
                continue
            exc = future.exception()
            if exc is not None:
                self._callback_failed(node, exc)

    def _callback_failed(self, node: Any, exc: BaseException) -> None:
        """A callback raised past the node's own boundary: count it, keep spinning.

        Every callback of our nodes is wrapped (test_node_health walks them), so this is
        the last line: the node's :class:`NodeHealth` records it (ERROR in /diagnostics,
        ``errors.callback.unwrapped``); a node without one gets the error logged.
        """
        if isinstance(exc, (KeyboardInterrupt, SystemExit, ExternalShutdownException,
                            ShutdownException)):
            raise exc
        self.callback_errors += 1
        health = getattr(node, 'health', None)
        if isinstance(health, NodeHealth):
            health.record('callback', 'unwrapped', exc)
            return
        logger = node.get_logger() if node is not None else \
            rclpy.logging.get_logger('emotion_ros')
        tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        logger.error(f'a callback failed: {describe_error(exc)} (the node keeps '
                     f'spinning)\n{tb.rstrip()}')


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
