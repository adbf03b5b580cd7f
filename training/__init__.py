"""Offline training module of emotion_ros: data, fine-tuning, evaluation, weights bundles.

Not needed on the robot. It imports the train/serve contract from
``emotion_ros``, never the reverse. Run ``python -m training --help`` for the
commands; the data side is in :mod:`training.data` (records, formats, checks),
:mod:`training.emotic` (EMOTIC readers), :mod:`training.synthetic` (an
offline dataset in the EMOTIC layout) and :mod:`training.samples` (what the
model is shown and asked to answer). Submodules load heavy libraries only when
used, so importing this package is cheap.
"""
