"""Training code for FrameRS models (the only package that imports torch)."""
