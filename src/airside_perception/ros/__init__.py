"""ROS layer: the only modules of the package that import rospy or message types."""
