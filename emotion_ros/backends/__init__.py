"""Emotion model backends behind one interface, chosen by config."""

from emotion_ros.backends.base import create_backend, EmotionBackend, register_backend

__all__ = ['EmotionBackend', 'create_backend', 'register_backend']
