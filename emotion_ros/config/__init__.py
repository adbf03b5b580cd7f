"""Configuration: validated frozen dataclasses and reading them from YAML without ROS.

``schema`` declares fields (description, constraints) and builds/validates
dataclasses from mappings; ``nodes`` holds one dataclass per node; ``robot``
reads ``config/robot.yaml`` into them for the bag evaluation and benchmarks.
"""
