"""Training and export of the reference networks. Needs PyTorch: ``pip install -r requirements-train.txt``.

Never imported by the vehicle code.
"""
