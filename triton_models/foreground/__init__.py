"""The video foreground of any subject (people by RVM, anything else by saliency): pure
numpy/OpenCV, shared by the `foreground` Triton model, the benchmarks and the tests."""

from triton_models.foreground.tracker import ForegroundFrame, ForegroundModel, ForegroundTracker, PersonGate

__all__ = ["ForegroundFrame", "ForegroundModel", "ForegroundTracker", "PersonGate"]
