"""Offline compression of the engines: structured pruning (safety-aware), distillation,
quantization-aware training, 2:4 sparsity, and the recipe that chains them.

PyTorch and Torch-Pruning are offline-tool dependencies (requirements-train.txt); nothing on
the vehicle path imports this package.
"""
