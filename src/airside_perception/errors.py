"""Typed errors of the core. Every message says what was wrong and how to fix it."""


class AirsideError(Exception):
    """Base class of every error the package raises on purpose."""


class ConfigError(AirsideError):
    """A configuration file or parameter is missing, unknown or out of range."""


class CloudFormatError(AirsideError):
    """A point cloud cannot be read: missing fields, wrong sizes, too many points."""


class ManifestError(AirsideError):
    """An engine manifest is missing, malformed, or disagrees with its model file."""


class ModelLoadError(AirsideError):
    """An engine could not be loaded by its backend."""


class InferenceError(AirsideError):
    """An engine failed while running, or returned unusable outputs."""


class SwapError(AirsideError):
    """An engine swap was refused; the engine in service keeps serving."""


class CapabilityError(ModelLoadError):
    """The step needs what this machine lacks (TensorRT, an engine built for this GPU): command-line
    tools exit 3 for it, not 2."""
