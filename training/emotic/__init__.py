"""EMOTIC and LLaVA: person records, dataset formats and checks, samples, evaluation.

:mod:`~training.emotic.records` (PersonRecord, label vectors),
:mod:`~training.emotic.readers` (the official .mat / CSV files),
:mod:`~training.emotic.dataset` (format detection, JSONL, checks, stats),
:mod:`~training.emotic.synthetic` (an offline dataset in the EMOTIC layout),
:mod:`~training.emotic.samples` (what the model is shown and asked),
:mod:`~training.emotic.evaluate` (mAP, AP, VAD MAE, thresholds) and
:mod:`~training.emotic.task` (the ``llava`` task of the training loop).
Imports :mod:`training.core` only.
"""
