"""Offline-tool tests: they need PyTorch and Torch-Pruning (requirements-train.txt), which the
vehicle's Python 3.8 environment does not have; there they are not collected."""

import importlib.util

collect_ignore_glob = [] if all(importlib.util.find_spec(m) for m in ("torch", "torch_pruning")) else ["test_*.py"]
