"""Evidence fusion: per-person distress from emotions, voices and calls for help, and incidents.

``distress`` folds perception and audio evidence into levels and alerts;
``incidents`` keeps one incident per person in distress with its operator
commands. No ROS imports.
"""
