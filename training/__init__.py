"""Offline training module of emotion_ros: data, fine-tuning, evaluation, weights bundles.

Not needed on the robot. It imports the train/serve contract from
``emotion_ros``, never the reverse. Run ``python -m training --help`` for the
commands. Three homes, imported in one direction only:

* :mod:`training.core`: what both model kinds share (TrainConfig, collation,
  the LLaVA model, media reading, tiny models, the training loop);
* :mod:`training.emotic`: EMOTIC and LLaVA (records, readers, dataset checks,
  the synthetic set, samples, evaluation); imports ``core``;
* :mod:`training.av`: the audio-visual model (clip datasets, model,
  evaluation with modality ablations); imports ``core`` and ``emotic``.

:mod:`training.commands` dispatches the commands that serve both kinds
(``stats``, ``evaluate``, ``train``, ``export``). Submodules load heavy
libraries only when used, so importing this package is cheap.
"""
