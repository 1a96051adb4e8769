"""Imports every vehicle module of the ROS-free core: run it under the vehicle's Python 3.8."""

import importlib
import pkgutil
import sys

import airside_perception

SKIP_PREFIXES = ("airside_perception.ros", "airside_perception.training", "airside_perception.compression")


def main() -> int:
    names = [m.name for m in pkgutil.walk_packages(airside_perception.__path__, "airside_perception.")]
    imported = 0
    for name in sorted(names):
        if name.startswith(SKIP_PREFIXES):
            continue
        importlib.import_module(name)
        imported += 1
    print(f"imported {imported} modules under Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
