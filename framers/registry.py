"""Names -> selectors and reconstructors. Learned ones are imported lazily (they load ONNX models)."""

from __future__ import annotations

from functools import cache
from typing import Any

from framers import defaults
from framers.errors import ModelError, UnsupportedOptionError
from framers.reconstructors.base import Reconstructor
from framers.selectors import OracleSelector, RandomSelector, Selector, StrideSelector, UniformSelector

SELECTORS = ("framers", "oracle", "uniform", "stride", "random")
RECONSTRUCTORS = ("framemae", "linear", "hold", "mci")


@cache
def get_reconstructor(name: str, version: str | None = None) -> Reconstructor:
    """One instance per process, name and model version (learned ones keep their ONNX sessions).
    ``version``: a stored version of the learned model (``framemae``; None: the newest); ModelError
    when it is not in the store, UnsupportedOptionError for a version of a classical method."""
    if version is not None and name != "framemae":
        raise UnsupportedOptionError(f"reconstructor {name!r} has no model versions")
    if name == "linear":
        from framers.reconstructors.classical import LinearReconstructor

        return LinearReconstructor()
    if name == "hold":
        from framers.reconstructors.classical import HoldReconstructor

        return HoldReconstructor()
    if name == "mci":
        from framers.reconstructors.mci import MCIReconstructor

        return MCIReconstructor()
    if name == "framemae":
        from framers.model_store import model_dir
        from framers.reconstructors.framemae import FrameMAEReconstructor

        return FrameMAEReconstructor(model_dir("framemae", version) if version else None)
    raise UnsupportedOptionError(f"unknown reconstructor {name!r} (choose from {', '.join(RECONSTRUCTORS)})")


def get_selector(
    name: str, keep: int = defaults.KEEP, stride: int = defaults.STRIDE,
    oracle_reconstructor: str = defaults.ORACLE_RECONSTRUCTOR, seed: int = 0
) -> Selector:
    """The selector ``name``: ``keep`` slots per clip (slot selectors), every ``stride``-th frame
    (``stride``), ``oracle_reconstructor`` the one ``oracle`` optimises for. Raises
    UnsupportedOptionError for an unknown name or option; ModelError when a learned model is missing."""
    if name == "uniform":
        return UniformSelector(keep)
    if name == "stride":
        return StrideSelector(stride)
    if name == "random":
        return RandomSelector(keep, seed=seed)
    if name == "oracle":
        return OracleSelector(get_reconstructor(oracle_reconstructor), keep)
    if name == "framers":
        from framers.selector_model import LearnedSelector

        return LearnedSelector(keep)
    raise UnsupportedOptionError(f"unknown selector {name!r} (choose from {', '.join(SELECTORS)})")


def available_methods() -> dict[str, Any]:
    """Methods a caller can ask for, and the versions of the learned models present."""
    models: dict[str, str] = {}
    try:
        from framers.model_store import latest_versions

        models = latest_versions()
    except (ImportError, ModelError):
        models = {}
    return {"selectors": list(SELECTORS), "reconstructors": list(RECONSTRUCTORS), "models": models}
