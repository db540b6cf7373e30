"""FrameRS codec: keep a quarter of a video's frames, rebuild the rest on demand."""

__version__ = "0.1.0"
