"""Class tables shared by the simulator, the models and the nodes."""

from __future__ import annotations

from typing import Dict, Tuple

#: Semantic classes of every point, label value -> name.
CLASS_NAMES: Tuple[str, ...] = (
    "ground",
    "aircraft",
    "person",
    "vehicle",
    "cart",
    "cone",
    "fod",
    "structure",
    "unknown",
)
CLASS_IDS: Dict[str, int] = {name: index for index, name in enumerate(CLASS_NAMES)}

#: The near field of the safety gates and shadow runs: persons within this range of the vehicle.
NEAR_FIELD_M = 20.0
#: A person counts as found when a confident person box, matched one-to-one, has its centre this close.
PERSON_MATCH_M = 1.0

GROUND = CLASS_IDS["ground"]
AIRCRAFT = CLASS_IDS["aircraft"]
PERSON = CLASS_IDS["person"]
VEHICLE = CLASS_IDS["vehicle"]
CART = CLASS_IDS["cart"]
CONE = CLASS_IDS["cone"]
FOD = CLASS_IDS["fod"]
STRUCTURE = CLASS_IDS["structure"]
UNKNOWN = CLASS_IDS["unknown"]

#: Label value of a point that was not classified (NaN, out of range).
UNLABELLED = 255

#: Classes the detector predicts boxes for, detector label value -> name.
DETECTION_CLASS_NAMES: Tuple[str, ...] = ("aircraft", "vehicle", "cart", "person", "cone")

#: RGB colours (0..1) for markers and rendered images.
CLASS_COLOURS: Dict[str, Tuple[float, float, float]] = {
    "ground": (0.55, 0.55, 0.55),
    "aircraft": (0.20, 0.45, 0.95),
    "person": (1.00, 0.10, 0.10),
    "vehicle": (1.00, 0.65, 0.00),
    "cart": (0.60, 0.35, 0.10),
    "cone": (1.00, 0.40, 0.70),
    "fod": (0.80, 0.00, 0.80),
    "structure": (0.25, 0.70, 0.30),
    "unknown": (0.10, 0.10, 0.10),
}
