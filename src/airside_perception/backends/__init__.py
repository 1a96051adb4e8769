"""Inference backends behind one interface: ``activate()`` / ``infer(feeds)`` / ``deactivate()``."""
