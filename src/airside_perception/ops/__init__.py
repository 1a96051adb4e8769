"""Pre- and post-processing as plain array functions over NumPy or CuPy (``gpu`` runs them on CuPy)."""
