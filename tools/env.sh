# Source this file (". tools/env.sh") to use emotion_ros from this checkout:
# activates .venv, puts the built emotion_ros_msgs on the paths, and applies
# the project's network rules (ROS 2 traffic stays on loopback).
_er_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
# colcon's and venv's setup scripts read unset variables: relax 'set -u' while sourcing them.
case $- in *u*) _er_nounset=1; set +u ;; *) _er_nounset= ;; esac
# shellcheck disable=SC1091
. "$_er_root/.venv/bin/activate"
# shellcheck disable=SC1091
. "$_er_root/install/setup.sh"
export AMENT_PREFIX_PATH="$_er_root/install/emotion_ros_msgs:$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( ($$ % 100) + 101 ))}
export ROS_LOG_DIR=${ROS_LOG_DIR:-$_er_root/build/ros_log}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_er_root/tools/fastdds_loopback.xml}
export EMOTION_ROS_ROOT=$_er_root
# This checkout's code first (the venv's editable install may point at another clone).
export PYTHONPATH="$_er_root${PYTHONPATH:+:$PYTHONPATH}"
# Never reach a model hub from here (users' machines may unset these).
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export YOLO_OFFLINE=${YOLO_OFFLINE:-1}
mkdir -p "$ROS_LOG_DIR"
[ -n "$_er_nounset" ] && set -u
unset _er_root _er_nounset
