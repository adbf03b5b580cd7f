"""emotion_ros: notice people in distress from a robot's camera and microphone.

The core modules (everything but ``emotion_ros.ros``) are plain Python and
never import rclpy, so they serve the live nodes, the bag evaluation, the
benchmarks and the training module alike.
"""

__version__ = '0.1.0'
