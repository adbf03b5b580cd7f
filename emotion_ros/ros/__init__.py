"""ROS 2 glue: thin nodes and the one message-conversion module.

Everything here may import rclpy; nothing outside this package does.
"""
