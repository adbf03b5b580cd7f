"""Offline evaluation: replay a bag through the robot's pipeline and score it against labels.

The same :class:`~emotion_ros.pipeline.OfflinePipeline` the benchmarks use,
built from the same ``config/robot.yaml`` the nodes read, is fed the bag's
camera and microphone messages in recorded order, with the messages' own
stamps as its clock, as fast as the machine allows. Results stream into the
output folder while it runs (see :mod:`emotion_ros.evaluation.records`), so
a crash leaves everything up to that point readable; the metrics, report and
plots are written at the end, or from what is there after a failure.
"""

from __future__ import annotations

import array
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from emotion_ros.evaluation.bags import (AUDIO_COMMON_TYPES, AUDIO_INFO_TYPE, AUDIO_TYPES, BagInfo,
                                         BagReader, IMAGE_TYPES, stamp_seconds)
from emotion_ros.errors import InputError
from emotion_ros.evaluation.inputs import (audio_info_format, AudioDecoder,
                                           decode_image_message, RawAudioFormat)
from emotion_ros.evaluation.labels import Labels, load_labels
from emotion_ros.evaluation.records import (ALERTS_FILE, AlertRecord, CUES_FILE, CueRecord,
                                            FRAMES_FILE, FrameRecord, JsonlWriter,
                                            SCORES_FILE, ScoreRecord, TRANSCRIPTS_FILE,
                                            TranscriptRecord)
from emotion_ros.evaluation.scoring import EvalConfig, Scorer, summarize, to_json_safe

log = logging.getLogger('emotion_ros.evaluation')

RUN_FILE = 'run.json'
PROGRESS_FILE = 'progress.json'
METRICS_FILE = 'metrics.json'
# Everything a run writes; --overwrite removes only these.
OUTPUT_FILES = (RUN_FILE, PROGRESS_FILE, METRICS_FILE, FRAMES_FILE, CUES_FILE, ALERTS_FILE,
                SCORES_FILE, 'report.md', 'pr_curves.png', 'timeline.png', 'latency.png',
                'labels.yaml', 'labels.yml', 'labels.json')
STAMP_SOURCES = ('auto', 'header', 'log')
# Consecutive undecodable messages of one topic at its start that mean the
# topic itself is wrong (encoding, format) rather than a glitch.
_FAIL_FAST_MESSAGES = 10
_PROGRESS_PERIOD_S = 2.0

PipelineFactory = Callable[[Any], Any]
PathLike = Union[str, 'os.PathLike[str]']


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What to replay, and how."""

    image_topic: str = ''  # '' = from the labels file, else the bag's only image topic
    audio_topic: str = ''  # '' = from the labels file, else the bag's only audio topic; 'none'
    start_s: float = 0.0  # skip this much of the bag's beginning
    duration_s: float = 0.0  # 0 = to the end
    stamp_source: str = 'auto'  # message clock: header stamps, receive (log) times, or auto
    max_clock_skew_s: float = 10.0  # auto: header stamps this far from log times are not trusted
    raw_audio_format: Optional[RawAudioFormat] = None  # audio_common AudioData without AudioInfo
    overwrite: bool = False
    progress: bool = True
    # False: the live rate (perception.max_rate_hz), what the robot would do; True: every
    # frame the bag holds is processed (for scoring; faster than the robot could).
    every_frame: bool = False
    # Audio stage in a worker process next to perception (2+ cores; same results as serial).
    parallel: bool = True


def rate_mode(robot: Any, every_frame: bool) -> Dict[str, Any]:
    """How frames are rate-limited in a run, as written into run.json, metrics and report."""
    if every_frame:
        return {'mode': 'every_frame', 'max_rate_hz': None,
                'description': 'every frame: for scoring'}
    hz = float(robot.perception.max_rate_hz)
    return {'mode': 'live', 'max_rate_hz': hz,
            'description': f'live rate {hz:g} Hz: what the robot would do'}


def unlimited_rate(robot: Any) -> Any:
    """A copy of the robot config whose perception processes every frame (no rate limit).

    The pipeline's rate limiter gets a zero period (1 / inf), which lets every frame through.
    """
    perception = dataclasses.replace(robot.perception, max_rate_hz=math.inf)
    return dataclasses.replace(robot, perception=perception)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_pipeline(robot: Any) -> Any:
    """Build the pipeline the robot runs from its configuration."""
    from emotion_ros.pipeline import OfflinePipeline
    return OfflinePipeline(robot)


# ------------------------------------------------------------- output folder
def guard_output_dir(out: Path, overwrite: bool, marker: str, what: str) -> bool:
    """Refuse an output folder whose contents a run would replace without being asked.

    Returns:
        True when ``out`` holds a previous ``what`` (its ``marker`` file) that
        ``overwrite`` allows replacing; False when it is missing or empty.

    Raises:
        InputError: ``output_exists`` when ``out`` is a file, is not empty and
            ``overwrite`` is off, or is not empty and holds no ``marker``.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f'output path {out} exists and is not a folder', kind='output_exists')
    if not (out.is_dir() and any(out.iterdir())):
        return False
    if not overwrite:
        raise InputError(f'output folder {out} exists and is not empty; choose another '
                         '--out or pass --overwrite to replace a previous evaluation',
                         kind='output_exists')
    if not (out / marker).is_file():
        raise InputError(f'output folder {out} is not empty and does not hold a previous '
                         f'{what} ({marker} missing); refusing to overwrite it',
                         kind='output_exists')
    return True


def prepare_output_dir(path: PathLike, overwrite: bool = False) -> Path:
    """Create the output folder; an existing non-empty one is never silently overwritten.

    With ``overwrite`` a previous evaluation folder (one holding ``run.json``)
    is cleared of the files an evaluation writes; any other non-empty folder
    is refused, so a mistyped ``--out`` cannot delete unrelated files.

    Raises:
        InputError: ``output_exists`` naming the folder and what to do.
    """
    out = Path(path)
    if guard_output_dir(out, overwrite, RUN_FILE, 'evaluation'):
        for name in OUTPUT_FILES:
            target = out / name
            if target.is_file():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, data: Any) -> None:
    # Write-then-rename so a reader (or a crash) never sees half a file.
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(to_json_safe(data), indent=2, allow_nan=False) + '\n',
                   encoding='utf-8')
    os.replace(tmp, path)


def _versions() -> Dict[str, str]:
    from importlib import metadata
    out = {'python': platform.python_version(), 'platform': platform.platform()}
    for name in ('emotion_ros', 'rosbags', 'numpy', 'torch'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if 'emotion_ros' not in out:
        import emotion_ros
        out['emotion_ros'] = emotion_ros.__version__
    return out


# ------------------------------------------------------------------- topics
def choose_topics(bag: BagReader, labels: Labels, options: RunOptions
                  ) -> Tuple[str, Optional[str], Optional[str]]:
    """Pick the camera, audio and audio-info topics (explicit > labels file > only candidate).

    Raises:
        InputError: ``bag_topic`` for a named topic that is missing or of the
            wrong type, or when the choice is ambiguous or impossible (listing
            the candidates).
    """
    image = options.image_topic or labels.image_topic
    if image:
        bag.require_topic(image, IMAGE_TYPES)
    else:
        candidates = bag.topics_of_type(IMAGE_TYPES)
        # An aligned depth image (<camera>/depth/...) is geometry, not the camera.
        colour = [t for t in candidates if '/depth/' not in t.name and
                  not t.name.endswith('/depth')]
        candidates = colour if len(colour) == 1 else candidates
        if len(candidates) != 1:
            raise InputError(
                f'bag {bag.path} has {len(candidates)} image topics '
                f'({[t.name for t in candidates]}); name the camera with --image-topic '
                f'(the bag has: {bag.info.describe_topics()})', kind='bag_topic')
        image = candidates[0].name
    audio: Optional[str] = options.audio_topic or labels.audio_topic or None
    if audio == 'none':
        audio = None
    elif audio:
        bag.require_topic(audio, AUDIO_TYPES)
    else:
        candidates = bag.topics_of_type(AUDIO_TYPES)
        if len(candidates) > 1:
            raise InputError(
                f'bag {bag.path} has {len(candidates)} audio topics '
                f'({[t.name for t in candidates]}); name one with --audio-topic, or '
                '--audio-topic none', kind='bag_topic')
        audio = candidates[0].name if candidates else None
        if audio is None:
            log.warning('bag %s has no audio topic: audio cues are not evaluated', bag.path)
    info_topic = None
    if audio is not None and bag.info.topics[audio].msgtype in AUDIO_COMMON_TYPES:
        infos = bag.topics_of_type([AUDIO_INFO_TYPE])
        if infos:
            # Prefer the AudioInfo published next to the audio topic.
            prefix = audio.rsplit('/', 1)[0]
            infos.sort(key=lambda t: (not t.name.startswith(prefix + '/'), t.name))
            info_topic = infos[0].name
    return image, audio, info_topic


# -------------------------------------------------------------------- runner
class _Stats:
    """Counters and per-stage timings of a run (bounded: a float per processed item)."""

    def __init__(self) -> None:
        self.images_read = 0
        self.frames_processed = 0
        self.audio_messages = 0
        self.cue_windows = 0
        self.alerts = 0
        self.input_errors: Dict[str, int] = {}
        self.stage_ms: Dict[str, array.array] = {}  # 8 bytes per value
        self.first_t: Optional[float] = None
        self.last_t = 0.0
        self.wall_s = 0.0
        self.load_s = 0.0
        self.stages = 'serial'  # or 'parallel' (audio in a worker process)

    def seen(self, t: float) -> None:
        if self.first_t is None:
            self.first_t = t
        self.last_t = max(self.last_t, t)

    @property
    def covered_s(self) -> float:
        """Bag time replayed so far."""
        return 0.0 if self.first_t is None else max(self.last_t - self.first_t, 0.0)

    def add_time(self, stage: str, ms: float) -> None:
        self.stage_ms.setdefault(stage, array.array('d')).append(float(ms))

    def to_json(self, bag_duration_s: float) -> Dict[str, Any]:
        wall = self.wall_s
        return {
            'wall_s': wall, 'model_load_s': self.load_s, 'bag_time_s': self.last_t,
            'replayed_s': self.covered_s, 'bag_duration_s': bag_duration_s,
            'realtime_factor': self.covered_s / wall if wall > 0 else math.nan,
            'images_read': self.images_read, 'frames_processed': self.frames_processed,
            'frames_skipped': self.images_read - self.frames_processed,
            'images_read_per_s': self.images_read / wall if wall > 0 else math.nan,
            'frames_processed_per_s': self.frames_processed / wall if wall > 0 else math.nan,
            'input_fps': (self.images_read / self.covered_s) if self.covered_s > 0 else math.nan,
            'audio_messages': self.audio_messages, 'cue_windows': self.cue_windows,
            'alerts': self.alerts, 'input_errors': dict(self.input_errors),
            'stages': self.stages,
            'stages_ms': {k: summarize(v) for k, v in sorted(self.stage_ms.items())},
        }


class EvaluationRun:
    """One offline evaluation of a bag; ``run()`` does it and returns the metrics."""

    def __init__(self, bag: PathLike, labels: PathLike, config: PathLike, out: PathLike,
                 eval_config: EvalConfig = EvalConfig(), options: RunOptions = RunOptions(),
                 pipeline_factory: PipelineFactory = default_pipeline) -> None:
        """Set up (nothing is read or written until ``run()``).

        Args:
            bag: rosbag2 folder or .db3/.mcap file.
            labels: labels file (YAML/JSON, see docs/evaluation.md).
            config: ``config/robot.yaml`` (ROS 2 parameters file of the nodes).
            out: output folder; must not exist or be empty (see ``RunOptions.overwrite``).
            eval_config: matching and scoring settings.
            options: topics, time range, clock and progress display.
            pipeline_factory: builds the pipeline from the robot config (tests
                and benchmarks may wrap the real one).
        """
        if options.stamp_source not in STAMP_SOURCES:
            raise InputError(f'stamp source {options.stamp_source!r} is not one of '
                             f'{list(STAMP_SOURCES)}', kind='option')
        self.bag_path = Path(bag)
        self.labels_path = Path(labels)
        self.config_path = Path(config)
        self.out = Path(out)
        self.eval_config = eval_config
        self.options = options
        self.pipeline_factory = pipeline_factory
        self.stats = _Stats()
        self._use_log_time = options.stamp_source == 'log'
        self._clock_checked = options.stamp_source != 'auto'
        self._labels_text = b''
        self.rate: Optional[Dict[str, Any]] = None  # rate_mode(), set by run()

    # ---------------------------------------------------------------- public
    def run(self) -> Dict[str, Any]:
        """Replay, score and report.

        Returns:
            The metrics (also in ``<out>/metrics.json``).

        Raises:
            InputError, ConfigError, ModelLoadError: for bad inputs, before
                anything is replayed; any error during the replay after the
                partial results were written (``progress.json`` says failed).
        """
        from emotion_ros.config.robot import load_node_config, load_robot_config
        labels = load_labels(self.labels_path)
        # Kept in memory: --overwrite may clear the very folder the labels came from.
        self._labels_text = self.labels_path.read_bytes()
        robot = load_robot_config(str(self.config_path))
        audio_node = load_node_config(str(self.config_path), 'audio_node')
        raw_format = self.options.raw_audio_format or RawAudioFormat(
            audio_node.audio_common_sample_rate, audio_node.audio_common_channels,
            audio_node.audio_common_sample_format)
        self.rate = rate_mode(robot, self.options.every_frame)
        with BagReader(self.bag_path) as bag:
            info = bag.info
            labels = labels.resolve(info.start_s, info.duration_s,
                                    self.eval_config.label_time_tolerance_s)
            image_topic, audio_topic, info_topic = choose_topics(bag, labels, self.options)
            out = prepare_output_dir(self.out, self.options.overwrite)
            self._write_run_file(out, info, robot, image_topic, audio_topic, info_topic)
            if self.options.every_frame:  # run.json keeps the configuration as read
                robot = unlimited_rate(robot)
            self._write_progress(out, info, 'running')
            scorer = Scorer(labels, self.eval_config)
            try:
                self._replay(bag, info, robot, scorer, image_topic, audio_topic, info_topic,
                             AudioDecoder(raw_format))
            except KeyboardInterrupt:
                self._save_partial(out, info, labels, scorer, 'interrupted',
                                   'interrupted by the user')
                raise
            except BaseException as exc:
                error = ''.join(traceback.format_exception_only(type(exc), exc)).strip()
                self._save_partial(out, info, labels, scorer, 'failed', error)
                raise
            self._write_progress(out, info, 'complete')
            metrics = self._finish(out, info, labels, scorer, 'complete', None)
        return metrics

    # --------------------------------------------------------------- replay
    def _write_run_file(self, out: Path, info: BagInfo, robot: Any, image_topic: str,
                        audio_topic: Optional[str], info_topic: Optional[str]) -> None:
        suffix = self.labels_path.suffix.lower() or '.yaml'
        (out / f'labels{suffix}').write_bytes(self._labels_text)
        _write_json(out / RUN_FILE, {
            'mode': 'offline',
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'command': sys.argv,
            'bag': {'path': str(self.bag_path.resolve()), 'storage': info.storage,
                    'start_s': info.start_s, 'duration_s': info.duration_s,
                    'message_count': info.message_count, 'size_bytes': info.size_bytes,
                    'recovered': info.recovered,
                    'topics': {t.name: {'type': t.msgtype, 'count': t.count}
                               for t in info.topics.values()}},
            'labels': str(self.labels_path.resolve()), 'labels_copy': f'labels{suffix}',
            'config': str(self.config_path.resolve()),
            'topics': {'image': image_topic, 'audio': audio_topic, 'audio_info': info_topic},
            'options': {k: v for k, v in dataclasses.asdict(self.options).items()
                        if k != 'raw_audio_format'},
            'eval_config': dataclasses.asdict(self.eval_config),
            'rate': self.rate,
            'robot_config': _config_dict(robot),
            'versions': _versions(),
        })

    def _window(self, info: BagInfo, status: str) -> Tuple[float, float]:
        # The part of the bag that was scored: the requested window, cut at
        # the last replayed message when the run did not complete.
        lo = max(self.options.start_s, 0.0)
        hi = lo + self.options.duration_s if self.options.duration_s > 0 else info.duration_s
        hi = min(hi, info.duration_s)
        if status != 'complete':
            hi = min(hi, self.stats.last_t)
        return lo, max(hi, lo)

    def _write_progress(self, out: Path, info: BagInfo, status: str,
                        error: Optional[str] = None) -> None:
        data = {'status': status, 'error': error, 'window_s': list(self._window(info, status)),
                'updated': datetime.datetime.now(datetime.timezone.utc).isoformat(),
                'stamp_source': 'log' if self._use_log_time else 'header',
                **self.stats.to_json(info.duration_s)}
        _write_json(out / PROGRESS_FILE, data)

    def _save_partial(self, out: Path, info: BagInfo, labels: Labels, scorer: Scorer,
                      status: str, error: str) -> None:
        # Best effort: the error that stopped the run must reach the caller,
        # whatever happens while saving what was done.
        try:
            self._write_progress(out, info, status, error)
            self._finish(out, info, labels, scorer, status, error)
            log.error('evaluation %s: %s; partial results in %s', status, error, out)
        except Exception as exc:
            log.error('could not save the partial results in %s: %s', out, exc)

    def _relative(self, stamp: float, info: BagInfo) -> float:
        return stamp - info.start_s

    def _clock(self, header_stamp: float, log_time: float, topic: str) -> float:
        if not self._clock_checked:
            self._clock_checked = True
            if header_stamp <= 0 or abs(header_stamp - log_time) > self.options.max_clock_skew_s:
                log.warning('header stamps on %s differ from the bag receive times by %.1f s; '
                            'using receive times as the clock (--stamp-source header to '
                            'override)', topic, header_stamp - log_time)
                self._use_log_time = True
        if self._use_log_time or header_stamp <= 0:
            return log_time
        return header_stamp

    def _input_error(self, topic: str, exc: InputError, first_ok: bool) -> None:
        self.stats.input_errors[exc.kind] = self.stats.input_errors.get(exc.kind, 0) + 1
        failures = self.stats.input_errors[exc.kind]
        if not first_ok and failures >= _FAIL_FAST_MESSAGES:
            raise InputError(f'the first {failures} messages on {topic} cannot be decoded: '
                             f'{exc}', kind=exc.kind) from exc
        if failures <= 3:
            log.warning('skipping a message on %s: %s', topic, exc)

    def _replay(self, bag: BagReader, info: BagInfo, robot: Any, scorer: Scorer,
                image_topic: str, audio_topic: Optional[str], info_topic: Optional[str],
                decoder: AudioDecoder) -> None:
        out = self.out
        stats = self.stats
        pipeline = self.pipeline_factory(robot)
        if self.options.parallel and _cpus() >= 2 and hasattr(pipeline, 'use_audio_worker'):
            stats.stages = 'parallel' if pipeline.use_audio_worker() else 'serial'
        t0 = time.perf_counter()
        pipeline.load()
        stats.load_s = time.perf_counter() - t0
        writers = {name: JsonlWriter(out / name)
                   for name in (FRAMES_FILE, CUES_FILE, ALERTS_FILE, SCORES_FILE,
                                TRANSCRIPTS_FILE)}
        # Camera geometry next to the image topic (make-bag --camera-info / --depth, or a
        # recorded camera): persons get positions, as in the perception node.
        namespace = image_topic.rsplit('/', 1)[0]
        geometry = {t: kind for t, kind in ((f'{namespace}/camera_info', 'info'),
                                            (f'{namespace}/depth/image_raw', 'depth'))
                    if t in info.topics}
        camera_model, depth = None, None
        topics = [image_topic] + [t for t in (info_topic, audio_topic) if t] + list(geometry)
        start_ns = info.start_ns + int(self.options.start_s * 1e9) if self.options.start_s \
            else None
        stop_ns = (info.start_ns + int((self.options.start_s + self.options.duration_s) * 1e9)
                   if self.options.duration_s > 0 else None)
        total = sum(info.topics[t].count for t in topics)
        bar = _progress_bar(total, self.options.progress)
        image_ok = audio_ok = False
        next_progress = time.monotonic() + _PROGRESS_PERIOD_S
        wall0 = time.perf_counter()
        try:
            for message in bag.messages(topics, start_ns, stop_ns):
                t_read = time.perf_counter()
                msg = bag.deserialize(message)
                log_time = message.log_time
                skip = message.topic == image_topic and not self._frame_due(
                    pipeline, msg, log_time, message.topic, info)
                if skip:
                    # Rate-limited: not decoded, as perception_node decodes only the
                    # frames it processes.
                    stats.images_read += 1
                elif message.topic == image_topic:
                    stats.images_read += 1
                    t1 = time.perf_counter()
                    try:
                        rgb = decode_image_message(msg, message.msgtype)
                    except InputError as exc:
                        self._input_error(message.topic, exc, image_ok)
                        continue
                    image_ok = True
                    decode_ms = (time.perf_counter() - t1) * 1e3
                    stamp = self._clock(stamp_seconds(msg.header), log_time, message.topic)
                    t = self._relative(stamp, info)
                    t2 = time.perf_counter()
                    use_depth = depth[1] if depth is not None and abs(
                        depth[0] - stamp) <= robot.perception.localization.max_depth_age_s \
                        else None
                    # Geometry only when the bag has it (pipelines without it keep working).
                    extra = (camera_model, use_depth) if camera_model is not None else ()
                    result, alerts = pipeline.on_image(rgb, stamp, msg.header.frame_id,
                                                       *extra)
                    pipeline_ms = (time.perf_counter() - t2) * 1e3
                    stats.add_time('decode', decode_ms)
                    stats.add_time('read', (t1 - t_read) * 1e3)
                    if result is not None:
                        stats.frames_processed += 1
                        stats.add_time('frame_total', pipeline_ms + decode_ms)
                        for stage, ms in result.timings_ms.items():
                            stats.add_time(stage, ms)
                        record = FrameRecord.from_result(
                            result, self._relative(result.stamp, info),
                            {'decode': decode_ms, 'total': pipeline_ms + decode_ms})
                        writers[FRAMES_FILE].write(record)
                        scorer.add_frame(record)
                    self._alerts(alerts, info, scorer, writers[ALERTS_FILE])
                    if result is not None or alerts:
                        writers[SCORES_FILE].write(ScoreRecord(t, pipeline.distress_scores()))
                    stats.seen(t)
                elif message.topic in geometry:
                    try:
                        if geometry[message.topic] == 'info':
                            camera_model = camera_model_from_msg(msg)
                        else:
                            depth = (stamp_seconds(msg.header), depth_from_msg(msg))
                    except InputError as exc:
                        self._input_error(message.topic, exc, False)
                elif message.topic == info_topic:
                    try:
                        decoder.raw_format = audio_info_format(msg)
                    except InputError as exc:
                        self._input_error(message.topic, exc, False)
                else:
                    stats.audio_messages += 1
                    t1 = time.perf_counter()
                    try:
                        samples, rate, header_stamp = decoder.decode(msg, message.msgtype,
                                                                     log_time)
                    except InputError as exc:
                        self._input_error(message.topic, exc, audio_ok)
                        continue
                    audio_ok = True
                    stamp = self._clock(header_stamp, log_time, message.topic)
                    t2 = time.perf_counter()
                    cues, alerts = pipeline.on_audio(samples, rate, stamp)
                    stats.add_time('audio_decode', (t2 - t1) * 1e3)
                    stats.add_time('audio', (time.perf_counter() - t2) * 1e3)
                    self._cues(cues, info, writers[CUES_FILE])
                    self._transcripts(pipeline, info, writers[TRANSCRIPTS_FILE])
                    self._alerts(alerts, info, scorer, writers[ALERTS_FILE])
                    if cues or alerts:
                        t = self._relative(stamp, info)
                        writers[SCORES_FILE].write(ScoreRecord(
                            self._relative(cues[-1].stamp, info) if cues else t,
                            pipeline.distress_scores()))
                    stats.seen(self._relative(stamp, info))
                stats.wall_s = time.perf_counter() - wall0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f'bag {stats.last_t:.1f}s, alerts {stats.alerts}',
                                        refresh=False)
                if time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + _PROGRESS_PERIOD_S
                    self._write_progress(out, info, 'running')
            if hasattr(pipeline, 'finish'):  # the inputs still queued or held
                cues, alerts = pipeline.finish()
                self._cues(cues, info, writers[CUES_FILE])
                self._alerts(alerts, info, scorer, writers[ALERTS_FILE])
                stats.wall_s = time.perf_counter() - wall0
                for ms in getattr(pipeline, 'audio_stage_ms', ()):  # wherever it ran
                    stats.add_time('audio_stage', ms)
        finally:
            stats.wall_s = time.perf_counter() - wall0
            if bar is not None:
                bar.close()
            try:  # the utterance still open at the end of the bag
                self._transcripts(pipeline, info, writers[TRANSCRIPTS_FILE], flush=True)
            except Exception as exc:  # noqa: B902 - never lose the other records over it
                log.warning('transcripts at the end of the bag: %s', exc)
            for writer in writers.values():
                writer.close()
            pipeline.close()

    def _frame_due(self, pipeline: Any, msg: Any, log_time: float, topic: str,
                   info: BagInfo) -> bool:
        """Whether the pipeline's rate limit takes this frame (always, for a pipeline
        without ``frame_due``); a skipped frame still advances the replayed time."""
        if not hasattr(pipeline, 'frame_due'):
            return True
        stamp = self._clock(stamp_seconds(msg.header), log_time, topic)
        if pipeline.frame_due(stamp):
            return True
        self.stats.seen(self._relative(stamp, info))
        return False

    def _cues(self, cues: Sequence[Any], info: BagInfo, writer: JsonlWriter) -> None:
        for cue in cues:
            self.stats.cue_windows += 1
            writer.write(CueRecord.from_cue(cue, self._relative(cue.stamp, info)))

    def _transcripts(self, pipeline: Any, info: BagInfo, writer: JsonlWriter,
                     flush: bool = False) -> None:
        """Record the utterances the audio extractor decoded (one line per utterance)."""
        if hasattr(pipeline, 'take_transcripts'):
            for tr in pipeline.take_transcripts(flush):
                writer.write(TranscriptRecord.from_transcript(
                    tr, self._relative(tr.start, info), self._relative(tr.end, info)))
            return
        audio = getattr(pipeline, 'audio', None)
        if audio is None or not hasattr(audio, 'pop_transcripts'):
            return
        heard, pipeline.transcripts = list(getattr(pipeline, 'transcripts', [])), []
        heard += audio.flush() if flush else audio.pop_transcripts()
        for tr in heard:
            writer.write(TranscriptRecord.from_transcript(
                tr, self._relative(tr.start, info), self._relative(tr.end, info)))

    def _alerts(self, alerts: Sequence[Any], info: BagInfo, scorer: Scorer,
                writer: JsonlWriter) -> None:
        for alert in alerts:
            record = AlertRecord.from_alert(alert, self._relative(alert.stamp, info))
            writer.write(record)
            scorer.add_alert(record)
            self.stats.alerts += 1

    # --------------------------------------------------------------- finish
    def _finish(self, out: Path, info: BagInfo, labels: Labels, scorer: Scorer, status: str,
                error: Optional[str]) -> Dict[str, Any]:
        performance = self.stats.to_json(info.duration_s)
        return finish_report(out, labels, scorer, self._window(info, status), performance,
                             status, error, mode='offline', rate=self.rate)


def _config_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config):
        return {f.name: _config_dict(getattr(config, f.name))
                for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return list(config)
    return config


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit='msg', desc='evaluate', dynamic_ncols=True, file=sys.stderr)


def finish_report(out: Path, labels: Labels, scorer: Scorer, window: Tuple[float, float],
                  performance: Dict[str, Any], status: str, error: Optional[str],
                  mode: str, rate: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Compute the metrics from a filled scorer, write metrics.json, report.md and plots.

    Args:
        window: the scored part of the bag (s from its start); episodes that
            start outside it are not counted, false alerts are per hour of it.
        rate: the rate mode (:func:`rate_mode`), when known.
    """
    from emotion_ros.evaluation.report import write_report
    metrics: Dict[str, Any] = {
        'status': status, 'complete': status == 'complete', 'error': error, 'mode': mode,
        'window_s': list(window), 'evaluated_s': window[1] - window[0],
        'emotion': scorer.emotion_metrics(),
        'detection': scorer.detection_metrics(),
        'distress': scorer.distress_metrics(window),
        'incidents': scorer.incident_metrics(window),
        'performance': performance,
    }
    if rate is not None:
        metrics['rate'] = rate
    _write_json(out / METRICS_FILE, metrics)
    try:
        write_report(out, metrics, labels, scorer)
    except Exception as exc:  # a plotting problem must not lose the metrics
        log.error('could not write the report in %s: %s', out, exc)
        if status == 'complete':
            raise
    return to_json_safe(metrics)


def report_from_dir(out: PathLike) -> Dict[str, Any]:
    """Recompute metrics, report and plots from an evaluation folder (e.g. after a crash).

    Raises:
        InputError: ``output_missing`` when the folder holds no evaluation.
    """
    from emotion_ros.evaluation.records import read_jsonl
    out = Path(out)
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise InputError(f'{out} holds no evaluation ({RUN_FILE} missing)',
                         kind='output_missing')
    run = json.loads(run_file.read_text(encoding='utf-8'))
    labels_path = out / run.get('labels_copy', 'labels.yaml')
    if not labels_path.is_file():
        labels_path = Path(run['labels'])
    labels = load_labels(labels_path).resolve(run['bag']['start_s'], run['bag']['duration_s'],
                                              run['eval_config']['label_time_tolerance_s'])
    from emotion_ros.config.schema import from_mapping
    eval_config = from_mapping(EvalConfig, run['eval_config'])
    scorer = Scorer(labels, eval_config)
    last_t = 0.0
    for frame in read_jsonl(out / FRAMES_FILE, FrameRecord):
        scorer.add_frame(frame)
        last_t = max(last_t, frame.t)
    for alert in read_jsonl(out / ALERTS_FILE, AlertRecord):
        scorer.add_alert(alert)
        last_t = max(last_t, alert.t)
    for cue in read_jsonl(out / CUES_FILE):
        last_t = max(last_t, float(cue['t']))
    progress: Dict[str, Any] = {}
    if (out / PROGRESS_FILE).is_file():
        progress = json.loads((out / PROGRESS_FILE).read_text(encoding='utf-8'))
    status = progress.get('status', 'unknown')
    performance = {k: v for k, v in progress.items()
                   if k not in ('status', 'error', 'updated', 'stamp_source', 'window_s')}
    window = list(progress.get('window_s') or [0.0, run['bag']['duration_s']])
    if status in ('running', 'unknown'):
        # Nobody finished the run: the process died without a word. Score
        # what its records cover.
        status = 'killed'
        window[1] = max(window[0], last_t)
        performance['bag_time_s'] = last_t
    return finish_report(out, labels, scorer, (float(window[0]), float(window[1])),
                         performance, status, progress.get('error'),
                         mode=run.get('mode', 'offline'), rate=run.get('rate'))


def evaluate(bag: PathLike, labels: PathLike, config: PathLike, out: PathLike,
             eval_config: EvalConfig = EvalConfig(), options: RunOptions = RunOptions(),
             pipeline_factory: PipelineFactory = default_pipeline) -> Dict[str, Any]:
    """Evaluate the pipeline on a labelled bag (see :class:`EvaluationRun`)."""
    return EvaluationRun(bag, labels, config, out, eval_config, options,
                         pipeline_factory).run()


__all__ = ['EvaluationRun', 'RunOptions', 'choose_topics', 'default_pipeline', 'evaluate',
           'finish_report', 'prepare_output_dir', 'rate_mode', 'report_from_dir',
           'unlimited_rate']


def camera_model_from_msg(msg: Any) -> Any:
    """A CameraModel from a deserialised sensor_msgs/CameraInfo (InputError when invalid)."""
    from emotion_ros.perception.localization import CameraModel
    return CameraModel(list(msg.k), list(msg.d), msg.distortion_model, int(msg.width),
                       int(msg.height), msg.header.frame_id)


def depth_from_msg(msg: Any) -> Any:
    """Metres (NaN invalid) from a deserialised 16UC1/32FC1 sensor_msgs/Image."""
    import numpy as np

    from emotion_ros.perception.localization import depth_to_metres
    dtype = {'16UC1': '<u2', 'mono16': '<u2', '32FC1': '<f4'}.get(msg.encoding)
    if dtype is None:
        return depth_to_metres(msg.encoding, np.zeros((1, 1)))  # raises, naming it
    if msg.is_bigendian:
        dtype = '>' + dtype[1:]
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    raw = np.asarray(msg.data, np.uint8)
    size = np.dtype(dtype).itemsize
    if raw.size < step * height or step < width * size:
        raise InputError(f'depth image {width}x{height} {msg.encoding}: {raw.size} bytes, '
                         f'step {step} do not fit', kind='depth_size')
    rows = raw[:step * height].reshape(height, step)[:, :width * size]
    native = np.uint16 if dtype[1:] == 'u2' else np.float32
    return depth_to_metres(msg.encoding, rows.copy().view(dtype).astype(native))
