import pytest

pytest.importorskip("torch")  # offline-tool tests: the vehicle's Python 3.8 venv has no PyTorch
pytest.importorskip("torch_pruning")
