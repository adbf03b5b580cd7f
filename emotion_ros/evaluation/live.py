"""Live evaluation (``emotion-ros evaluate --live``): the node graph itself, fed from a bag.

Starts ``perception_node``, ``audio_node`` and ``distress_node`` as separate
processes with the same parameters file (in a namespace of their own), plays
the bag into them with :class:`~emotion_ros.ros.bag_player_node.BagPlayer`
at its recorded pace, records what they publish (``persons``, ``audio_cues``,
``distress_alerts``) and scores it exactly like the offline evaluation. With
``compare_offline`` the offline evaluation of the same bag runs afterwards
(into ``<out>/offline``) and ``comparison.json`` says whether both raised the
same alerts within the tolerance explained in docs/evaluation.md.

rclpy is imported inside functions only, so this module loads without ROS.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from emotion_ros.evaluation.bags import AUDIO_FRAME_TYPE, BagReader, COMPRESSED_IMAGE_TYPE
from emotion_ros.errors import EmotionRosError, InputError
from emotion_ros.evaluation.labels import load_labels
from emotion_ros.evaluation.records import (ALERTS_FILE, AlertRecord, CUES_FILE, CueRecord,
                                            FRAMES_FILE, FrameRecord, JsonlWriter,
                                            TRANSCRIPTS_FILE, TranscriptRecord)
from emotion_ros.evaluation.runner import (_write_json, choose_topics, finish_report,
                                           prepare_output_dir, PROGRESS_FILE, RUN_FILE,
                                           RunOptions)
from emotion_ros.evaluation.scoring import EvalConfig, Scorer, summarize

log = logging.getLogger('emotion_ros.evaluation.live')

NODE_AUDIO_TYPES = {
    AUDIO_FRAME_TYPE: 'emotion_ros',
    'audio_common_msgs/msg/AudioData': 'audio_common',
    'audio_common_msgs/msg/AudioDataStamped': 'audio_common_stamped',
}


@dataclasses.dataclass(frozen=True)
class LiveOptions:
    """How the live graph is run."""

    rate: float = 1.0  # playback speed; the nodes work in real time, so keep 1.0 to compare
    startup_timeout_s: float = 120.0  # for the nodes to load their models and subscribe
    settle_s: float = 1.0  # after subscribing, for the perception node to activate
    drain_s: float = 3.0  # keep recording until nothing new arrived for this long
    max_drain_s: float = 30.0
    compare_offline: bool = True


def _executable(name: str) -> str:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise EmotionRosError(f'cannot find the {name} executable (is emotion_ros installed '
                              'and its workspace sourced?)')
    return found


class _Graph:
    """The node processes, each logging to ``<out>/logs/<node>.log``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: Dict[str, subprocess.Popen] = {}
        self._files: List[Any] = []

    def start(self, name: str, args: Sequence[str]) -> None:
        f = open(self.logs / f'{name}.log', 'w', encoding='utf-8')
        self._files.append(f)
        self.procs[name] = subprocess.Popen([_executable(name), *args], stdout=f,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise EmotionRosError(f'{name} exited with code {proc.returncode}: '
                                      f'{self.tail(name)}')

    def tail(self, name: str, lines: int = 8) -> str:
        try:
            text = (self.logs / f'{name}.log').read_text(errors='replace')
        except OSError:
            return ''
        return ' | '.join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for f in self._files:
            f.close()


class _Recorder:
    """Subscribes to the graph's outputs and keeps them with their monotonic receipt time."""

    def __init__(self, node: Any) -> None:
        from emotion_ros_msgs.msg import AudioCues, DistressAlert, PersonEmotionArray, Transcript

        from emotion_ros.ros.qos import reliability_qos
        qos = reliability_qos('reliable', depth=200)
        self.persons: List[Tuple[Any, float]] = []
        self.cues: List[Tuple[Any, float]] = []
        self.alerts: List[Tuple[Any, float]] = []
        self.transcripts: List[Tuple[Any, float]] = []
        self.last = time.monotonic()
        self._lock = threading.Lock()
        self.subs = [
            node.create_subscription(PersonEmotionArray, 'persons',
                                     lambda m: self._keep(self.persons, m), qos),
            node.create_subscription(AudioCues, 'audio_cues',
                                     lambda m: self._keep(self.cues, m), qos),
            node.create_subscription(DistressAlert, 'distress_alerts',
                                     lambda m: self._keep(self.alerts, m), qos),
            node.create_subscription(Transcript, 'transcripts',
                                     lambda m: self._keep(self.transcripts, m), qos),
        ]

    def _keep(self, store: List[Tuple[Any, float]], msg: Any) -> None:
        now = time.monotonic()
        with self._lock:
            store.append((msg, now))
            self.last = now


def _alert_from_msg(msg: Any) -> Any:
    from emotion_ros.ros import conversions
    from emotion_ros.types import Alert
    person = conversions.msg_to_person(msg.person) if msg.has_person else None
    return Alert(stamp=conversions.stamp_to_sec(msg.header.stamp), track_id=int(msg.track_id),
                 level=int(msg.level), score=float(msg.score), reasons=list(msg.reasons),
                 person=person, frame_id=msg.header.frame_id,
                 incident_id=int(getattr(msg, 'incident_id', 0)),
                 camera=getattr(msg, 'camera', ''))


def compare_alerts(offline: Sequence[Dict[str, Any]], live: Sequence[Dict[str, Any]],
                   tolerance_s: float, min_level: int = 1) -> Dict[str, Any]:
    """Pair the alerts of two runs (same level, times within ``tolerance_s``), in time order.

    Args:
        offline, live: alert rows (``t``, ``level``, ``track_id``, ``person``).
        tolerance_s: largest time difference of a pair.
        min_level: alerts below this level are left out of the comparison.

    Returns:
        ``{'agree': bool, 'pairs': [...], 'offline_only': [...], 'live_only': [...],
        'max_dt_s': float}``; ``agree`` when every alert found its partner.
    """
    a = sorted((r for r in offline if r['level'] >= min_level), key=lambda r: r['t'])
    b = sorted((r for r in live if r['level'] >= min_level), key=lambda r: r['t'])
    used = [False] * len(b)
    pairs, offline_only = [], []
    for row in a:
        best = None
        for j, other in enumerate(b):
            if used[j] or other['level'] != row['level']:
                continue
            dt = abs(other['t'] - row['t'])
            if dt <= tolerance_s and (best is None or dt < best[1]):
                best = (j, dt)
        if best is None:
            offline_only.append(row)
            continue
        used[best[0]] = True
        other = b[best[0]]
        pairs.append({'offline_t': row['t'], 'live_t': other['t'], 'dt_s': other['t'] - row['t'],
                      'level': row['level'], 'offline_person': row.get('person'),
                      'live_person': other.get('person')})
    live_only = [r for j, r in enumerate(b) if not used[j]]
    return {'agree': not offline_only and not live_only, 'tolerance_s': tolerance_s,
            'min_level': min_level, 'pairs': pairs, 'offline_only': offline_only,
            'live_only': live_only,
            'max_dt_s': max((abs(p['dt_s']) for p in pairs), default=0.0)}


def evaluate_live(bag: Any, labels: Any, config: Any, out: Any,
                  eval_config: EvalConfig = EvalConfig(), options: RunOptions = RunOptions(),
                  live: LiveOptions = LiveOptions()) -> Dict[str, Any]:
    """Play ``bag`` into the running node graph and score what it publishes.

    Returns:
        The live metrics, with a ``comparison`` entry when ``live.compare_offline``.

    Raises:
        InputError, ConfigError: for bad inputs (before anything starts);
            EmotionRosError when the nodes do not come up.
    """
    import rclpy
    from rclpy.parameter import Parameter

    from emotion_ros.config.robot import load_robot_config
    from emotion_ros.ros import conversions
    from emotion_ros.ros.bag_player_node import BagPlayer, message_class
    from emotion_ros.ros.executor import NodeExecutor

    bag, labels_path, config, out = Path(bag), Path(labels), str(config), Path(out)
    robot = load_robot_config(config)
    parsed = load_labels(labels_path)
    labels_text = labels_path.read_bytes()  # --overwrite may clear the folder it is in
    with BagReader(bag) as reader:
        info = reader.info
        parsed = parsed.resolve(info.start_s, info.duration_s,
                                eval_config.label_time_tolerance_s)
        image_topic, audio_topic, _ = choose_topics(reader, parsed, options)
    image_type = info.topics[image_topic].msgtype
    audio_type = info.topics[audio_topic].msgtype if audio_topic else None
    if audio_type is not None and audio_type not in NODE_AUDIO_TYPES:
        raise InputError(f'--live: the audio node cannot subscribe to {audio_type} '
                         f'(it takes {sorted(NODE_AUDIO_TYPES)}); use the offline mode',
                         kind='bag_topic')
    for msgtype in filter(None, (image_type, audio_type)):
        try:
            message_class(msgtype)
        except (ImportError, AttributeError):
            raise InputError(f'--live: message type {msgtype} is not installed here',
                             kind='bag_topic') from None
    out = prepare_output_dir(out, options.overwrite)
    suffix = labels_path.suffix.lower() or '.yaml'
    (out / f'labels{suffix}').write_bytes(labels_text)
    namespace = f'/emotion_ros_eval_{uuid.uuid4().hex[:8]}'
    _write_json(out / RUN_FILE, {
        'mode': 'live', 'command': sys.argv, 'namespace': namespace,
        'bag': {'path': str(bag.resolve()), 'storage': info.storage, 'start_s': info.start_s,
                'duration_s': info.duration_s, 'message_count': info.message_count,
                'size_bytes': info.size_bytes, 'recovered': info.recovered,
                'topics': {t.name: {'type': t.msgtype, 'count': t.count}
                           for t in info.topics.values()}},
        'labels': str(labels_path.resolve()), 'labels_copy': f'labels{suffix}',
        'config': str(Path(config).resolve()),
        'topics': {'image': image_topic, 'audio': audio_topic, 'audio_info': None},
        'live_options': dataclasses.asdict(live),
        'eval_config': dataclasses.asdict(eval_config),
        'robot_config': _robot_dict(robot)})

    ros = ['--ros-args', '--params-file', config, '-r', f'__ns:={namespace}']
    graph = _Graph(out / 'logs')
    published: Dict[str, List[Tuple[float, float]]] = {'image': [], 'audio': []}
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = NodeExecutor(num_threads=2, context=context)
    player = None
    started = time.monotonic()
    try:
        graph.start('perception_node', ros + [
            '-p', 'autostart:=true', '-p',
            f"image_transport:={'compressed' if image_type == COMPRESSED_IMAGE_TYPE else 'raw'}",
            '-r', f'image:={image_topic}'])
        if audio_topic:
            graph.start('audio_node', ros + [
                '-p', f'audio_msg_type:={NODE_AUDIO_TYPES[audio_type]}',
                '-r', f'audio:={audio_topic}'])
        graph.start('distress_node', ros)
        node = rclpy.create_node('live_evaluation', namespace=namespace, context=context)
        recorder = _Recorder(node)
        topics = [image_topic] + ([audio_topic] if audio_topic else [])

        def on_publish(message: Any, wall: float) -> None:
            # Header stamps are what the outputs carry; log time is a fallback.
            kind = 'image' if message.topic == image_topic else 'audio'
            published[kind].append((message.log_time, wall))

        player = BagPlayer([Parameter('bag', value=str(bag)),
                            Parameter('rate', value=float(live.rate)),
                            Parameter('topics', value=topics),
                            Parameter('reliability', value='reliable'),
                            # Scored against the labels in bag time: keep the recorded stamps.
                            Parameter('restamp', value=False)],
                           context=context, on_publish=on_publish)
        executor.add_node(node)
        executor.add_node(player)
        _wait_for_graph(executor, graph, node, player, topics, audio_topic is not None, live)
        log.info('graph is up after %.1f s; playing %s', time.monotonic() - started, bag)
        thread = threading.Thread(target=player.play, daemon=True)
        play_start = time.monotonic()
        thread.start()
        from tqdm import tqdm
        bar = tqdm(total=round(info.duration_s / live.rate, 1), unit='s', desc='evaluate --live',
                   disable=not options.progress, file=sys.stderr)
        while not player.done.is_set():
            executor.spin_once(timeout_sec=0.1)
            bar.n = round(min(time.monotonic() - play_start, bar.total), 1)
            bar.set_postfix_str(f'alerts {len(recorder.alerts)}', refresh=True)
            graph.check_alive()
        bar.close()
        play_wall = time.monotonic() - play_start
        deadline = time.monotonic() + live.max_drain_s
        while time.monotonic() < deadline and time.monotonic() - recorder.last < live.drain_s:
            executor.spin_once(timeout_sec=0.1)
    finally:
        if player is not None:
            player.stop()
        graph.stop()
        executor.shutdown()
        rclpy.try_shutdown(context=context)

    # Header stamps of the bag are seconds of ROS time; labels are relative.
    base = info.start_s
    scorer = Scorer(parsed, eval_config)
    writers = {name: JsonlWriter(out / name)
               for name in (FRAMES_FILE, CUES_FILE, ALERTS_FILE, TRANSCRIPTS_FILE)}
    wall_of = _PublishClock(published)
    frame_latency, alert_latency = [], []
    try:
        for msg, received in sorted(recorder.persons,
                                    key=lambda item: conversions.stamp_to_sec(
                                        item[0].header.stamp)):
            result = conversions.msg_to_frame(msg)
            record = FrameRecord.from_result(result, result.stamp - base,
                                             {'processing': float(msg.processing_ms)})
            writers[FRAMES_FILE].write(record)
            scorer.add_frame(record)
            sent = wall_of.image(result.stamp)
            if sent is not None:
                frame_latency.append((received - sent) * 1e3)
        for msg, _ in recorder.cues:
            cue = conversions.msg_to_cues(msg)
            writers[CUES_FILE].write(CueRecord.from_cue(cue, cue.stamp - base))
        for msg, _ in recorder.transcripts:
            writers[TRANSCRIPTS_FILE].write(TranscriptRecord(
                conversions.stamp_to_sec(msg.header.stamp) - base,
                conversions.stamp_to_sec(msg.end) - base, msg.text, bool(msg.help_detected),
                msg.help_phrase, float(msg.help_score), msg.language, float(msg.confidence),
                msg.detector, msg.model_id, 'ok'))
        for msg, received in recorder.alerts:
            alert = _alert_from_msg(msg)
            record = AlertRecord.from_alert(alert, alert.stamp - base)
            writers[ALERTS_FILE].write(record)
            scorer.add_alert(record)
            sent = wall_of.evidence(alert.stamp)
            if sent is not None:
                alert_latency.append((received - sent) * 1e3)
    finally:
        for writer in writers.values():
            writer.close()
    images = len(published['image'])
    performance = {
        'wall_s': play_wall, 'rate': live.rate, 'bag_time_s': info.duration_s,
        'replayed_s': info.duration_s, 'bag_duration_s': info.duration_s,
        'realtime_factor': info.duration_s / play_wall if play_wall > 0 else float('nan'),
        'images_read': images, 'frames_processed': len(recorder.persons),
        'frames_skipped': images - len(recorder.persons),
        'images_read_per_s': images / play_wall if play_wall > 0 else float('nan'),
        'frames_processed_per_s': len(recorder.persons) / play_wall if play_wall > 0
        else float('nan'),
        'audio_messages': len(published['audio']), 'cue_windows': len(recorder.cues),
        'alerts': len(recorder.alerts),
        'stages_ms': {'frame_latency': summarize(frame_latency),
                      'alert_latency': summarize(alert_latency)},
    }
    _write_json(out / PROGRESS_FILE, {'status': 'complete', 'error': None,
                                      'window_s': [0.0, info.duration_s], **performance})
    metrics = finish_report(out, parsed, scorer, (0.0, info.duration_s), performance,
                            'complete', None, mode='live')
    if live.compare_offline:
        from emotion_ros.evaluation.runner import evaluate
        offline = evaluate(bag, labels_path, config, out / 'offline', eval_config,
                           dataclasses.replace(options, overwrite=False))
        tolerance = live_tolerance_s(robot, info)
        comparison = compare_alerts(offline['distress']['alert_list'],
                                    metrics['distress']['alert_list'], tolerance,
                                    eval_config.min_alert_level)
        comparison['offline'] = _headline(offline)
        comparison['live'] = _headline(metrics)
        _write_json(out / 'comparison.json', comparison)
        _append_comparison(out / 'report.md', comparison)
        metrics['comparison'] = comparison
    return metrics


def live_tolerance_s(robot: Any, info: Any) -> float:
    """How far live and offline alert times may differ (see docs/evaluation.md).

    The live perception node's timer takes whichever frame is newest at its
    tick, the offline rate limiter the first frame of each period; the chosen
    frames, and so the stamps of frame-driven alerts, differ by up to one
    processing period plus one camera frame period.
    """
    image_counts = [t.count for t in info.topics.values()
                    if t.msgtype.startswith('sensor_msgs/msg/')]
    fps = (max(image_counts) / info.duration_s) if image_counts and info.duration_s > 0 else 10.0
    return 1.0 / robot.perception.max_rate_hz + 1.0 / max(fps, 1e-3)


class _PublishClock:
    """Monotonic publish time of the bag messages, looked up by their stamp."""

    def __init__(self, published: Dict[str, List[Tuple[float, float]]]) -> None:
        self._image = sorted(published['image'])
        self._all = sorted(published['image'] + published['audio'])
        self._image_t = [t for t, _ in self._image]
        self._all_t = [t for t, _ in self._all]

    def image(self, stamp: float) -> Optional[float]:
        i = bisect.bisect_left(self._image_t, stamp - 1e-6)
        if i < len(self._image) and abs(self._image_t[i] - stamp) < 0.05:
            return self._image[i][1]
        return None

    def evidence(self, stamp: float) -> Optional[float]:
        # The newest input the alert could have been raised on.
        i = bisect.bisect_right(self._all_t, stamp + 1e-6) - 1
        return self._all[i][1] if i >= 0 else None


def _headline(metrics: Dict[str, Any]) -> Dict[str, Any]:
    d = metrics['distress']
    return {'recall': d['recall'], 'precision': d['precision'], 'f1': d['f1'],
            'detected': d['detected'], 'episodes': d['episodes'],
            'false_alerts': d['false_alerts'],
            'time_to_alert_median_s': d['time_to_alert_s']['median'],
            'mAP': metrics['emotion']['mAP'],
            'alerts_counted': d['alerts_counted']}


def _append_comparison(report: Path, comparison: Dict[str, Any]) -> None:
    lines = ['', '## Live vs offline', '',
             f"Offline results are in `offline/`. Alerts of level >= {comparison['min_level']} "
             f"paired by level within {comparison['tolerance_s']:.2f} s: "
             f"{len(comparison['pairs'])} pairs, {len(comparison['offline_only'])} offline only, "
             f"{len(comparison['live_only'])} live only, largest time difference "
             f"{comparison['max_dt_s']:.2f} s: "
             f"**{'agree' if comparison['agree'] else 'differ'}**.", '',
             '| | offline | live |', '|---|---|---|']
    for key in comparison['offline']:
        lines.append(f"| {key} | {comparison['offline'][key]} | {comparison['live'][key]} |")
    with open(report, 'a', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def _robot_dict(robot: Any) -> Any:
    from emotion_ros.evaluation.runner import _config_dict
    return _config_dict(robot)


def _wait_for_graph(executor: Any, graph: _Graph, node: Any, player: Any, topics: List[str],
                    with_audio: bool, live: LiveOptions) -> None:
    """Until the nodes subscribe to the bag topics and publish their outputs (models loaded)."""
    deadline = time.monotonic() + live.startup_timeout_s
    outputs = ['persons', 'distress_alerts'] + (['audio_cues'] if with_audio else [])

    def ready() -> bool:
        inputs = all(player.publishers_by_topic[t].get_subscription_count() > 0 for t in topics)
        outs = all(node.count_publishers(node.resolve_topic_name(t)) > 0 for t in outputs)
        return inputs and outs

    while not ready():
        graph.check_alive()
        if time.monotonic() > deadline:
            raise EmotionRosError(
                f'the node graph did not come up within {live.startup_timeout_s:.0f} s; logs in '
                f'{graph.logs}: ' + '; '.join(f'{n}: {graph.tail(n, 3)}' for n in graph.procs))
        executor.spin_once(timeout_sec=0.2)
    settle = time.monotonic() + live.settle_s
    while time.monotonic() < settle:
        executor.spin_once(timeout_sec=0.1)


__all__ = ['LiveOptions', 'compare_alerts', 'evaluate_live', 'live_tolerance_s']
