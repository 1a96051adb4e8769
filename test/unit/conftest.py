import os
import sys

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")
if os.path.abspath(SRC) not in [os.path.abspath(p) for p in sys.path]:
    sys.path.insert(0, os.path.abspath(SRC))

# Command-line tests start fresh interpreters: they must find the same sources.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [os.path.abspath(SRC)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
