"""What every captum-fvit attribution shares as a Captum ``Attribution``."""

from __future__ import annotations

from captum.attr import Attribution

__all__ = ["ViTAttribution"]


class ViTAttribution(Attribution):
    """Captum protocol defaults for explanations that are not gradients times inputs.

    ``get_name`` returns the class name (Captum's default would turn ``DDSAttention`` into
    ``"D D S Attention"``); attributions are not multiplied by the inputs and have no
    convergence delta.
    """

    @classmethod
    def get_name(cls) -> str:
        return cls.__name__

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False
