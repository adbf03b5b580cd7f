"""Emotion model backends behind one interface, chosen by config."""

from emotion_ros.backends.base import EmotionBackend
from emotion_ros.backends.factory import create_backend, register_backend

__all__ = ['EmotionBackend', 'create_backend', 'register_backend']
