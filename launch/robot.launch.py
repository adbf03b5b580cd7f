"""Start the emotion_ros node graph on a robot: one perception node per camera, one distress node.

    ros2 launch emotion_ros robot.launch.py camera_topic:=/camera/image_raw \
        audio_topic:=/audio use_microphone:=true

    # Several cameras: a perception node per camera in its own namespace
    # (<namespace>/cam_left/perception_node, ...), all feeding one distress node.
    ros2 launch emotion_ros robot.launch.py cameras:=cam_left,cam_right \
        image_topic_pattern:=/{camera}/color/image_raw

Tunables live in the parameters file (default: the package's config/robot.yaml,
whose '/**/<node>' keys match every namespace); this file only picks the file,
the namespaces and the topic remappings, and brings the managed perception
nodes to active.
"""

import launch.events
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, OpaqueFunction,
                            RegisterEventHandler)
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def camera_list(text):
    """Camera names from the 'cameras' argument ('' -> one camera without a namespace)."""
    names = [c.strip().strip('/') for c in text.replace(';', ',').split(',')]
    return [c for c in names if c] or ['']


def join_ns(*parts):
    """Join namespace parts ('' parts skipped) into '/a/b' ('' when all are empty)."""
    inner = '/'.join(p.strip('/') for p in parts if p and p.strip('/'))
    return f'/{inner}' if inner else ''


def perception_nodes(context):
    """One managed perception node per camera, configured and activated on start."""
    params_file = LaunchConfiguration('params_file').perform(context)
    namespace = LaunchConfiguration('namespace').perform(context)
    ros_args = ['--ros-args', '--log-level', LaunchConfiguration('log_level').perform(context)]
    patterns = {key: LaunchConfiguration(key).perform(context) for key in
                ('image_topic_pattern', 'camera_info_topic_pattern', 'depth_topic_pattern')}
    single_camera_topic = LaunchConfiguration('camera_topic').perform(context)
    persons_topic = join_ns(namespace, 'persons') or '/persons'
    audio_topic = LaunchConfiguration('audio_topic').perform(context)
    if not audio_topic.startswith('/'):
        audio_topic = join_ns(namespace, audio_topic) or '/' + audio_topic
    actions = []
    for camera in camera_list(LaunchConfiguration('cameras').perform(context)):
        if camera:
            image = patterns['image_topic_pattern'].format(camera=camera)
        else:
            image = single_camera_topic
        # Shared with the other nodes, not per camera: persons to distress_node, and for the
        # audio_visual backend the microphone, audio_node's transcripts and the audio-only
        # estimate (voice_emotions) to distress_node.
        remappings = [('image', image), ('persons', persons_topic), ('audio', audio_topic),
                      ('transcripts', join_ns(namespace, 'transcripts') or '/transcripts'),
                      ('voice_emotions',
                       join_ns(namespace, 'voice_emotions') or '/voice_emotions')]
        if camera:
            remappings += [
                ('camera_info', patterns['camera_info_topic_pattern'].format(camera=camera)),
                ('depth', patterns['depth_topic_pattern'].format(camera=camera))]
        elif '/' in image.strip('/'):
            # /camera/image_raw -> /camera/camera_info (the camera driver's convention).
            remappings.append(('camera_info', image.rsplit('/', 1)[0] + '/camera_info'))
        perception = LifecycleNode(
            package='emotion_ros', executable='perception_node', name='perception_node',
            namespace=join_ns(namespace, camera), parameters=[params_file], output='screen',
            arguments=ros_args, remappings=remappings)
        # Managed node: configure (loads models) right away, activate once inactive.
        configure = EmitEvent(event=ChangeState(
            lifecycle_node_matcher=launch.events.matches_action(perception),
            transition_id=Transition.TRANSITION_CONFIGURE))
        activate = RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=perception, goal_state='inactive',
            entities=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=launch.events.matches_action(perception),
                transition_id=Transition.TRANSITION_ACTIVATE))]))
        actions += [perception, activate, configure]
    return actions


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
        DeclareLaunchArgument('cameras', default_value='',
                              description='Comma-separated camera names: one perception node '
                                          'per camera in namespace <namespace>/<camera>, its '
                                          'topics from the *_topic_pattern arguments. Empty: '
                                          'one camera on camera_topic.'),
        DeclareLaunchArgument('camera_topic', default_value='/camera/image_raw',
                              description='Camera topic when cameras is empty (Image, or '
                                          'CompressedImage with image_transport: compressed).'),
        DeclareLaunchArgument('image_topic_pattern', default_value='/{camera}/image_raw',
                              description='Image topic of each camera in cameras.'),
        DeclareLaunchArgument('camera_info_topic_pattern',
                              default_value='/{camera}/camera_info',
                              description='CameraInfo topic of each camera in cameras.'),
        DeclareLaunchArgument('depth_topic_pattern',
                              default_value='/{camera}/aligned_depth_to_color/image_raw',
                              description='Aligned depth topic of each camera (used with '
                                          'localization.use_depth: true).'),
        DeclareLaunchArgument('audio_topic', default_value='audio',
                              description='Audio topic (AudioFrame or audio_common types).'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='Log level of all nodes (debug, info, warn, error).'),
    ]

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

    return LaunchDescription(arguments + [OpaqueFunction(function=perception_nodes),
                                          audio, distress, microphone])
