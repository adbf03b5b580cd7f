"""What both model kinds share: config, collation, the LLaVA model, media, tiny models, the loop.

:mod:`~training.core.config` (TrainConfig and its YAML / flags),
:mod:`~training.core.collate` (prompt + answer tokens), :mod:`~training.core.model`
(LLaVA + LoRA + score head, bundle files), :mod:`~training.core.media` (images,
video frames, audio), :mod:`~training.core.tiny` (tiny random models for offline
runs) and :mod:`~training.core.train` (the Accelerate loop, checkpoints, export;
a :class:`~training.core.train.Task` supplies a model kind's data and model).
Nothing here imports :mod:`training.emotic` or :mod:`training.av`.
"""
