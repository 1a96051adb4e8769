#!/usr/bin/env bash
# Installs the ROS 1 build and runtime packages this package needs.
# On a machine with /opt/ros/noetic (the vehicle) nothing is installed: that tree is used.
set -euo pipefail

if [ -f /opt/ros/noetic/setup.bash ]; then
    echo "ROS Noetic found in /opt/ros/noetic: using it."
    exit 0
fi

PACKAGES="catkin ros-message-generation ros-message-runtime g++ make
  libstd-msgs-dev libstd-srvs-dev libsensor-msgs-dev libgeometry-msgs-dev libnav-msgs-dev
  libdiagnostic-msgs-dev libvisualization-msgs-dev librostest-dev ros-std-msgs ros-std-srvs
  ros-sensor-msgs ros-geometry-msgs ros-nav-msgs ros-diagnostic-msgs ros-visualization-msgs
  python3-rospy python3-roslaunch python3-rostest python3-rosbag python3-rosservice
  python3-rostopic python3-rosnode python3-rosmsg rosbash python3-std-msgs python3-std-srvs
  python3-sensor-msgs python3-geometry-msgs python3-nav-msgs python3-diagnostic-msgs
  python3-diagnostic-updater python3-visualization-msgs python3-tf2-ros python3-venv"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "ROS 1 packages: all installed."
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "Installing ROS 1 packages:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
