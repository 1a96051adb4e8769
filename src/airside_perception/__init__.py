"""Airside LiDAR perception: ROS-free core.

Everything under this package except :mod:`airside_perception.ros` takes and returns NumPy
arrays and dataclasses, and imports no ROS module.
"""

__version__ = "0.1.0"
