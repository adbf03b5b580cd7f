"""The audio-visual model: clip datasets, the training model, evaluation with ablations.

:mod:`~training.av.data` (RAVDESS, CREMA-D, DFEW, MER2023, MERR, AV JSONL; samples),
:mod:`~training.av.model` (build, collate, stage-1 init, bundle files),
:mod:`~training.av.synthetic` (the synthetic audio-visual task),
:mod:`~training.av.evaluate` (MER metrics per modality ablation),
:mod:`~training.av.tiny` (a random AV bundle on tiny models) and
:mod:`~training.av.task` (the ``audio_visual`` task of the training loop).
Imports :mod:`training.core` and :mod:`training.emotic` (EMOTIC images join a
mixed run), never the reverse.
"""
