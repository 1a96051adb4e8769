"""Offline tools: training, export, evaluation, engine builds, quantization, gates, benchmarks."""
