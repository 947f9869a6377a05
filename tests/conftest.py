"""Tiny random-weight models shared by the tests (offline, fast on a 2-core CPU)."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

IMG = 32
PATCH = 8
CLASSES = 5


def make_timm_vit(**kwargs) -> torch.nn.Module:
    """A 4-layer timm ViT (fused attention on, as timm builds it), 32×32 input, 8×8 patches."""
    torch.manual_seed(0)
    options = dict(
        img_size=IMG, patch_size=PATCH, num_classes=CLASSES, embed_dim=48, depth=4, num_heads=3
    )
    options.update(kwargs)
    name = options.pop("name", "vit_tiny_patch16_224")
    return timm.create_model(name, pretrained=False, **options).eval()


def make_tiny_unet(*, attention: bool = True, seed: int = 0):
    """The tiny diffusers UNet of the tests (32×32, seeded random weights).

    ``attention=True``: block channels (32, 64) with an attention block (about 0.7 M
    parameters); ``False``: channels (16, 32), no attention (faster, for float64 checks).
    """
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    if attention:
        return UNet2DModel(
            sample_size=32, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
        )  # fmt: skip
    return UNet2DModel(
        sample_size=32, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )  # fmt: skip


def make_torchvision_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=IMG,
        patch_size=PATCH,
        num_layers=3,
        num_heads=4,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=CLASSES,
    ).eval()
    # torchvision zero-initialises the head, which would make every gradient vanish.
    torch.nn.init.normal_(model.heads.head.weight, std=0.2)
    return model


def make_hf_vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=IMG,
        patch_size=PATCH,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=CLASSES,
    )
    return ViTForImageClassification(config).eval()


def make_hf_deit():
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    torch.manual_seed(0)
    config = DeiTConfig(
        image_size=IMG,
        patch_size=PATCH,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=CLASSES,
    )
    return DeiTForImageClassificationWithTeacher(config).eval()


@pytest.fixture(scope="session")
def timm_vit():
    return make_timm_vit()


@pytest.fixture(scope="session")
def torchvision_vit():
    return make_torchvision_vit()


@pytest.fixture(scope="session")
def hf_vit():
    return make_hf_vit()


@pytest.fixture(scope="session")
def hf_deit():
    return make_hf_deit()


@pytest.fixture(scope="session")
def deit_distilled():
    return make_timm_vit(name="deit_tiny_distilled_patch16_224")


@pytest.fixture(scope="session")
def vit_registers():
    return make_timm_vit(reg_tokens=4)


@pytest.fixture(scope="session")
def vit_non_square():
    """Non-square 24×40 inputs: a 3×5 patch grid."""
    return make_timm_vit(img_size=(24, 40))


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, IMG, IMG, generator=generator)


def model_state(model: torch.nn.Module) -> dict:
    """Everything a recorder may touch: hooks, fused flags, HF attention implementation."""
    state = {}
    for name, module in model.named_modules():
        state[name] = (
            tuple(module._forward_hooks),
            tuple(module._forward_pre_hooks),
            tuple(module._backward_hooks),
            getattr(module, "fused_attn", None),
            module.training,
        )
    config = getattr(model, "config", None)
    if config is not None:
        state["__config__"] = dict(config.__dict__)
    state["__global_hooks__"] = (
        len(torch.nn.modules.module._global_forward_hooks),
        len(torch.nn.modules.module._global_forward_pre_hooks),
    )
    return state
