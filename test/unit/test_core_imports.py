"""The core imports no ROS module, so it can be tested and reused without a ROS install; the
offline training and compression packages (PyTorch) are the only ones left out."""

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import airside_perception
for m in pkgutil.walk_packages(airside_perception.__path__, 'airside_perception.'):
    if m.name.startswith(('airside_perception.ros', 'airside_perception.training',
                          'airside_perception.compression')):  # offline tools: PyTorch allowed
        continue
    importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if n.split('.')[0] in
             ('rospy', 'rosbag', 'roslib', 'genpy', 'sensor_msgs', 'std_msgs', 'torch', 'tensorrt', 'cupy'))
print(','.join(bad))
"""


def test_core_modules_import_no_ros_torch_or_gpu_library(tmp_path):
    import airside_perception

    src = airside_perception.__path__[0].rsplit("/", 1)[0]
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"
