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
# One ROS_DOMAIN_ID per checkout, so every shell that sources this file sees the same graph
# (a second shell's alert_monitor, ros2 topic list): chosen once from the checkout's path
# (1-100, the range the ROS 2 docs call safe on Linux) and kept in build/ros_domain_id (edit
# it to choose another). An exported ROS_DOMAIN_ID wins.
if [ -z "${ROS_DOMAIN_ID:-}" ]; then
  _er_domain_file="$_er_root/build/ros_domain_id"
  _er_domain=$(cat "$_er_domain_file" 2>/dev/null || true)
  case $_er_domain in
    ''|*[!0-9]*)
      _er_domain=$(( $(printf '%s' "$_er_root" | cksum | cut -d' ' -f1) % 100 + 1 ))
      mkdir -p "$_er_root/build"
      printf '%s\n' "$_er_domain" > "$_er_domain_file.$$" && mv "$_er_domain_file.$$" "$_er_domain_file"
      ;;
  esac
  ROS_DOMAIN_ID=$_er_domain
  unset _er_domain _er_domain_file
fi
export ROS_DOMAIN_ID
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
