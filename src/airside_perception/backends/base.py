"""The backend interface. Inputs are checked here, once, so each backend stays short."""

from __future__ import annotations

import abc
import logging
from typing import Dict, Mapping, Sequence

import numpy as np

from airside_perception.engines.manifest import TensorSpec
from airside_perception.errors import InferenceError, ModelLoadError

LOG = logging.getLogger(__name__)


class Backend(abc.ABC):
    """Owns one loaded engine between ``activate()`` and ``deactivate()``.

    ``inputs`` / ``outputs`` are the manifest's signature; ``infer`` checks every feed against
    it (names, dtypes, fixed dimensions) before the engine sees it.
    """

    name = "backend"
    #: True where ``infer_device(feeds, stream_handle)`` takes arrays already on the GPU and
    #: returns device arrays (the host's device frame loop needs it of every engine).
    supports_device_buffers = False

    def __init__(self, model_path: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        self.model_path = model_path
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._is_active = False

    @property
    def is_active(self) -> bool:
        return self._is_active

    def activate(self) -> "Backend":
        if not self._is_active:
            self._activate()
            self._is_active = True
        return self

    def deactivate(self) -> None:
        if self._is_active:
            self._deactivate()
            self._is_active = False

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Runs the engine; returns every output by name. Raises ``InferenceError``."""
        if not self._is_active:
            raise InferenceError(f"{self.name} backend for {self.model_path} is not active: call activate() first")
        self._check_feeds(feeds)
        try:
            return self._infer(feeds)
        except InferenceError:
            raise
        except Exception as exc:  # the engine's own errors, typed for the caller
            raise InferenceError(f"{self.name} failed on {self.model_path}: {exc}") from exc

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        expected = {t.name for t in self.inputs}
        if set(feeds) != expected:
            raise InferenceError(f"feeds {sorted(feeds)} do not match the engine's inputs {sorted(expected)}")
        for spec in self.inputs:
            array = feeds[spec.name]
            if array.dtype != np.dtype(spec.dtype):
                raise InferenceError(f"input '{spec.name}' is {array.dtype}, the engine takes {spec.dtype}")
            if array.ndim != len(spec.shape) or any(
                    isinstance(d, int) and d != n for d, n in zip(spec.shape, array.shape)):
                raise InferenceError(f"input '{spec.name}' has shape {list(array.shape)}, "
                                     f"the engine takes {list(spec.shape)}")

    @abc.abstractmethod
    def _activate(self) -> None:
        """Load the engine; raise ``ModelLoadError`` with what to fix."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release everything ``_activate`` took."""

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run once on checked feeds."""


def load_error(model_path: str, exc: Exception, hint: str) -> ModelLoadError:
    return ModelLoadError(f"cannot load {model_path}: {exc}. {hint}")
