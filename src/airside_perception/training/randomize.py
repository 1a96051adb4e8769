"""Domain randomisation of training scans: :mod:`airside_perception.sim.randomize` (the same
draws make the shifted-data gate's randomized world)."""

from airside_perception.sim.randomize import Randomization, perturb, random_rig

__all__ = ["Randomization", "perturb", "random_rig"]
