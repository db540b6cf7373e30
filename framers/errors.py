"""Named exceptions of the codec. Callers (CLI, workers) map them to exit codes / job failures."""


class FramersError(Exception):
    """Base class of every error the codec raises on purpose."""


class InvalidVideoError(FramersError):
    """The input is not a usable video: unreadable, no video stream, truncated, zero frames.

    A bad input never succeeds on retry; workers fail the job with this message.
    """


class FrameTooLargeError(InvalidVideoError):
    """The container header declares a frame larger than the caller allows (refused before decoding)."""

    def __init__(self, message: str, width: int, height: int) -> None:
        super().__init__(message)
        self.width = width
        self.height = height


class BundleError(FramersError):
    """A keyframe bundle is malformed, of an unknown version, or fails its checksums."""


class ModelError(FramersError):
    """A model in the model store is missing, corrupt (checksum), or does not match its config."""


class UnsupportedOptionError(FramersError):
    """A selector / reconstructor / option combination the codec cannot honour."""
