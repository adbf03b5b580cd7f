"""Rosbag replay evaluation: score the robot's pipeline on labelled recordings.

* :mod:`~emotion_ros.evaluation.labels`: the labels format (persons, boxes
  over time, emotions, VAD, distress episodes);
* :mod:`~emotion_ros.evaluation.matching`: predicted-to-labelled matching by IoU;
* :mod:`~emotion_ros.evaluation.scoring`: the metrics;
* :mod:`~emotion_ros.evaluation.runner`: the offline replay (``emotion-ros evaluate``);
* :mod:`~emotion_ros.evaluation.batch`: several bags in parallel worker processes, one
  summary table across them;
* :mod:`~emotion_ros.evaluation.live`: the same against the running node graph (``--live``);
* :mod:`~emotion_ros.evaluation.report`: report.md, plots, summary table.

Everything here but ``live`` is ROS-free.
"""

from emotion_ros.evaluation.labels import (Episode, LABELS_FORMAT, LabelledPerson, Labels,
                                           load_labels, save_labels, Span)
from emotion_ros.evaluation.runner import (evaluate, EvaluationRun, prepare_output_dir,
                                           report_from_dir, RunOptions)
from emotion_ros.evaluation.scoring import EvalConfig, Scorer

__all__ = ['EvalConfig', 'Episode', 'EvaluationRun', 'LABELS_FORMAT', 'LabelledPerson',
           'Labels', 'RunOptions', 'Scorer', 'Span', 'evaluate', 'load_labels',
           'prepare_output_dir', 'report_from_dir', 'save_labels']
