"""Synthetic airside world: procedural apron scenes and a multi-LiDAR scanner (NumPy only)."""
