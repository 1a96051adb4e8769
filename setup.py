from catkin_pkg.python_setup import generate_distutils_setup
from setuptools import setup

setup(**generate_distutils_setup(
    packages=[
        "airside_perception",
        "airside_perception.backends",
        "airside_perception.baseline",
        "airside_perception.engines",
        "airside_perception.ops",
        "airside_perception.pipelines",
        "airside_perception.ros",
        "airside_perception.sim",
        "airside_perception.simplex",
        "airside_perception.tools",
        "airside_perception.training",
    ],
    package_dir={"": "src"},
))
