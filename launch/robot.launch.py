"""Start the emotion_ros node graph on a robot.

    ros2 launch emotion_ros robot.launch.py camera_topic:=/camera/image_raw \
        audio_topic:=/audio use_microphone:=true

Tunables live in the parameters file (default: the package's config/robot.yaml);
this file only picks the file, the namespace and the topic remappings, and
brings the managed perception node to active.
"""

import launch.events
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def generate_launch_description():
    """Declare the arguments and the nodes."""
    params_file = LaunchConfiguration('params_file')
    namespace = LaunchConfiguration('namespace')
    log_level = LaunchConfiguration('log_level')
    ros_args = ['--ros-args', '--log-level', log_level]

    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('emotion_ros'), 'config', 'robot.yaml']),
            description='ROS 2 parameters file for all emotion_ros nodes.'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of all emotion_ros nodes and topics.'),
        DeclareLaunchArgument('use_microphone', default_value='true',
                              description='Start microphone_node (false: audio comes from '
                                          'another driver on audio_topic).'),
        DeclareLaunchArgument('camera_topic', default_value='/camera/image_raw',
                              description='Camera topic (Image, or CompressedImage with '
                                          'image_transport: compressed in the params file).'),
        DeclareLaunchArgument('audio_topic', default_value='audio',
                              description='Audio topic (AudioFrame or audio_common types).'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='Log level of all nodes (debug, info, warn, error).'),
    ]

    perception = LifecycleNode(
        package='emotion_ros', executable='perception_node', name='perception_node',
        namespace=namespace, parameters=[params_file], output='screen', arguments=ros_args,
        remappings=[('image', LaunchConfiguration('camera_topic'))])
    audio = Node(
        package='emotion_ros', executable='audio_node', name='audio_node',
        namespace=namespace, parameters=[params_file], output='screen', arguments=ros_args,
        remappings=[('audio', LaunchConfiguration('audio_topic'))])
    distress = Node(
        package='emotion_ros', executable='distress_node', name='distress_node',
        namespace=namespace, parameters=[params_file], output='screen', arguments=ros_args)
    microphone = Node(
        package='emotion_ros', executable='microphone_node', name='microphone_node',
        namespace=namespace, parameters=[params_file], output='screen', arguments=ros_args,
        remappings=[('audio', LaunchConfiguration('audio_topic'))],
        condition=IfCondition(LaunchConfiguration('use_microphone')))

    # Managed node: configure (loads models) right away, activate once inactive.
    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=launch.events.matches_action(perception),
        transition_id=Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=perception, goal_state='inactive',
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=launch.events.matches_action(perception),
            transition_id=Transition.TRANSITION_ACTIVATE))]))

    return LaunchDescription(arguments + [perception, audio, distress, microphone,
                                          activate, configure])
