"""Perception, one camera frame at a time: decode -> detect people -> track -> emotion -> position.

``image_codec`` decodes frames, ``detectors/`` holds one person detector per
module, ``tracking`` keeps ids across frames, ``localization`` turns boxes into
bearings and 3-D points, ``av_context`` gathers the audio a person's estimate
hears, ``pipeline`` runs the stages in order (what ``perception_node`` runs),
``visualize`` draws the debug image. No ROS imports.
"""
