"""One typed `Params` for every image operation (sync endpoints and HD jobs alike).

No HTTP here: the worker reads Params back from an HD job's record. The form fields are parsed
into Params, with the document's errors, by gateway.schemas.forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from common.settings import Settings
from triton_models.decode import Limits

Operation = Literal["matte", "blur", "color", "gradient", "shadow"]
ModelChoice = Literal["auto", "u2netp", "rvm", "blend"]
Direction = Literal["vertical", "horizontal", "diagonal", "radial"]
RGB = tuple[int, int, int]

OPERATIONS: tuple[str, ...] = get_args(Operation)
MODELS: tuple[str, ...] = get_args(ModelChoice)
DIRECTIONS: tuple[str, ...] = get_args(Direction)


@dataclass(frozen=True)
class Params:
    operation: Operation = "matte"
    model: ModelChoice = "auto"
    blur_radius: int = 20
    bg_color: RGB | None = None  # color: white when absent; shadow: transparent when absent
    gradient_start: RGB = (255, 255, 255)
    gradient_end: RGB = (0, 0, 0)
    gradient_direction: Direction = "vertical"
    shadow_offset_x: int = 10
    shadow_offset_y: int = 10
    shadow_blur: int = 15
    shadow_opacity: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: colours are [r, g, b] lists of 0..255 once through json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Params:
        """Inverse of to_dict (JSON turns tuples into lists)."""
        fixed: dict[str, Any] = dict(data)
        for key in ("bg_color", "gradient_start", "gradient_end"):
            if fixed.get(key) is not None:
                fixed[key] = tuple(fixed[key])
        return cls(**fixed)


def hd_limits(settings: Settings) -> Limits:
    """The HD endpoint's pixel limits: no side limit, at most HD_MAX_PIXELS pixels."""
    return Limits(max_side=None, max_pixels=settings.hd_max_pixels)
