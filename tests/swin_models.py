"""Tiny random-weight Swin models (timm, torchvision v1/v2, Hugging Face) for the tests.

Two stages of two blocks (a regular and a shifted window block each) with 4×4 patches and
window 4 on non-square images. timm and torchvision see 24×40 images: stage grids 6×10 and
3×5, so they pad their windows, shift the second block, and on the 3×5 stage timm clips its
window to 3×4 and shifts only along the width while torchvision keeps 4×4 windows and drops
the shift along the height. Hugging Face cannot clip a window on a non-square grid (its
relative-position bias keeps the configured size), so it sees 44×60 images: grids 11×15
(padded to 12×16) and, after merging an odd grid, 6×8 (padded to 8×8).
"""

from __future__ import annotations

import timm
import torch

SWIN_IMAGE = (24, 40)
HF_SWIN_IMAGE = (44, 60)
SWIN_CLASSES = 5


def _randomize_head(linear: torch.nn.Linear) -> None:
    # Some families zero-initialise the head, which would make every gradient vanish.
    torch.nn.init.normal_(linear.weight, std=0.3)


def _randomize_bias_tables(model: torch.nn.Module) -> None:
    # Relative-position bias tables start near zero; make them matter in the references.
    for name, param in model.named_parameters():
        if "relative_position_bias_table" in name:
            torch.nn.init.normal_(param, std=0.5)


def make_timm_swin(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    options = dict(
        img_size=SWIN_IMAGE,
        patch_size=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=4,
        num_classes=SWIN_CLASSES,
        drop_path_rate=0.0,
    )
    options.update(kwargs)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **options)
    _randomize_bias_tables(model)
    return model.eval()


def make_torchvision_swin(v2: bool = False) -> torch.nn.Module:
    from torchvision.models.swin_transformer import (
        PatchMergingV2,
        SwinTransformer,
        SwinTransformerBlockV2,
    )

    torch.manual_seed(0)
    extra = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if v2 else {}
    model = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=[4, 4],
        num_classes=SWIN_CLASSES,
        stochastic_depth_prob=0.0,
        **extra,
    )
    _randomize_head(model.head)
    _randomize_bias_tables(model)
    return model.eval()


def make_hf_swin():
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)
    config = SwinConfig(
        image_size=SWIN_IMAGE[0],
        patch_size=4,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        num_labels=SWIN_CLASSES,
        drop_path_rate=0.0,
    )
    model = SwinForImageClassification(config)
    _randomize_bias_tables(model)
    model.eval()
    # Hugging Face clips window and shift sizes inside the first forward pass; run one so
    # that "the model as it was" is its steady state.
    with torch.no_grad():
        model(torch.zeros(1, 3, *HF_SWIN_IMAGE))
    return model


#: family → (constructor, image size, stage grids)
SWIN_FAMILIES = {
    "timm": (make_timm_swin, SWIN_IMAGE, ((6, 10), (3, 5))),
    "torchvision": (make_torchvision_swin, SWIN_IMAGE, ((6, 10), (3, 5))),
    "torchvision_v2": (lambda: make_torchvision_swin(v2=True), SWIN_IMAGE, ((6, 10), (3, 5))),
    "hf": (make_hf_swin, HF_SWIN_IMAGE, ((11, 15), (6, 8))),
}


def swin_images(n: int = 3, seed: int = 1, size: tuple[int, int] = SWIN_IMAGE) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def logits(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


__all__ = [
    "SWIN_CLASSES",
    "HF_SWIN_IMAGE",
    "SWIN_FAMILIES",
    "SWIN_IMAGE",
    "logits",
    "make_hf_swin",
    "make_timm_swin",
    "make_torchvision_swin",
    "swin_images",
]
