"""Point-prompted video object masks: pure numpy/OpenCV, shared by the Triton model and tests.

`KeypointTracker` turns key points on one frame plus a per-frame saliency map into a binary mask
that follows the selected object frame by frame (see docs/keypoints.md).
"""

from triton_models.keypoints.prompt import Prompt, PromptError
from triton_models.keypoints.tracker import KeypointTracker

__all__ = ["KeypointTracker", "Prompt", "PromptError"]
