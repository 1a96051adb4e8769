"""Simplex decision between the neural (advanced) path and the classical baseline."""
