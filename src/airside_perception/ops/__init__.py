"""Pre- and post-processing as plain array functions (NumPy; CuPy twins in ``gpu``)."""
