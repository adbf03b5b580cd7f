"""ament_python package emotion_ros (also pip-installable for development)."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'emotion_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['emotion_ros', 'emotion_ros.*', 'training', 'training.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='emotion_ros team',
    maintainer_email='emotion-ros@example.org',
    description='Distress alerts from camera and microphone with a multimodal emotion model.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'microphone_node = emotion_ros.ros.microphone_node:main',
            'perception_node = emotion_ros.ros.perception_node:main',
            'audio_node = emotion_ros.ros.audio_node:main',
            'distress_node = emotion_ros.ros.distress_node:main',
            'alert_monitor = emotion_ros.ros.alert_monitor:main',
            'bag_player = emotion_ros.ros.bag_player_node:main',
            'emotion-ros = emotion_ros.evaluation.cli:main',
        ],
    },
)
