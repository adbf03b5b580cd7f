"""Start the emotion_ros node graph on a robot: one perception node per camera, one distress node.

    ros2 launch emotion_ros robot.launch.py camera_topic:=/camera/image_raw \
        audio_topic:=/audio use_microphone:=true

    # Several cameras: a perception node per camera in its own namespace
    # (<namespace>/cam_left/perception_node, ...), all feeding one distress node.
    ros2 launch emotion_ros robot.launch.py cameras:=cam_left,cam_right \
        image_topic_pattern:=/{camera}/color/image_raw

The graph (nodes, namespaces, remappings, parameters files, which nodes are
managed) is described once, in emotion_ros/ros/graph.py; this file only turns
that description into launch actions, and `emotion-ros up` (the same graph
without `ros2 launch`) reads the same description. Tunables live in the
parameters file (default: the package's config/robot.yaml, whose '/**/<node>'
keys match every namespace).
"""

import launch.events
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from emotion_ros.ros import graph


def graph_actions(context):
    """One launch action per node of the graph description (managed ones brought to active)."""
    given = {name: LaunchConfiguration(name).perform(context) for name in graph.ARGUMENT_NAMES}
    actions = []
    for spec in graph.nodes(given):
        kind = LifecycleNode if spec.lifecycle else Node
        node = kind(package=graph.PACKAGE, executable=spec.executable, name=spec.name,
                    namespace=spec.namespace, parameters=list(spec.parameters),
                    remappings=list(spec.remappings),
                    arguments=['--ros-args', *spec.arguments], output='screen')
        actions.append(node)
        if spec.lifecycle:
            # Managed node: configure (loads models) right away, activate once inactive.
            matcher = launch.events.matches_action(node)
            actions.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, goal_state='inactive',
                entities=[EmitEvent(event=ChangeState(
                    lifecycle_node_matcher=matcher,
                    transition_id=Transition.TRANSITION_ACTIVATE))])))
            actions.append(EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matcher,
                transition_id=Transition.TRANSITION_CONFIGURE)))
    return actions


def generate_launch_description():
    """Declare the graph's arguments and start its nodes."""
    defaults = {'params_file': PathJoinSubstitution(
        [FindPackageShare(graph.PACKAGE), 'config', 'robot.yaml'])}
    arguments = [DeclareLaunchArgument(arg.name,
                                       default_value=defaults.get(arg.name, arg.default),
                                       description=arg.description)
                 for arg in graph.ARGUMENTS]
    return LaunchDescription(arguments + [OpaqueFunction(function=graph_actions)])
