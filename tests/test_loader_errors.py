"""Loaders refuse damaged or foreign weight files with errors that name the file and the fix.

Every broken file is written here, in ``tmp_path``; nothing is downloaded. Each case used to
fail with an error that named neither the file nor the cause (``EOFError('')`` for an empty
``.pt``, a raw ``SafetensorError`` from ``load_default(verify=False)``, diffusers' generic
``OSError`` for a damaged model folder).
"""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch
from guided_diffusion.unet import UNetModel

from captum_fvit.denoise import ADMConfig, DiffusionDenoiser, load_guided_diffusion
from captum_fvit.models import (
    DEFAULT_WEIGHTS_DIR,
    BundleError,
    build_scheduler,
    build_unet,
    build_vit,
    load_default,
    load_denoiser,
    load_vit,
    save_denoiser,
    save_vit,
)
from captum_fvit.weight_files import check_safetensors, local_model_folder

# A tiny guided-diffusion UNet (16x16, two levels): a real ADM checkpoint in a few hundred kB.
TINY_ADM = ADMConfig(
    image_size=16,
    model_channels=32,
    out_channels=6,
    num_res_blocks=1,
    attention_ds=(2,),
    channel_mult=(1, 2),
    num_head_channels=8,
)


def _adm_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    cfg = TINY_ADM
    model = UNetModel(
        image_size=cfg.image_size, in_channels=cfg.in_channels, model_channels=cfg.model_channels,
        out_channels=cfg.out_channels, num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=cfg.attention_ds, channel_mult=cfg.channel_mult,
        num_head_channels=cfg.num_head_channels, use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
    )
    return model.state_dict()


@pytest.fixture(scope="module")
def adm_state():
    return _adm_state_dict()


def _message(info: pytest.ExceptionInfo, path: os.PathLike) -> str:
    message = str(info.value)
    assert str(path) in message, f"the error does not name {path}: {message}"
    return message


# ------------------------------------------------------------------ ADM (.pt) checkpoints
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_valid_adm_checkpoints_still_load(tmp_path, adm_state, legacy):
    """The checks do not reject good files, in either torch.save format."""
    path = tmp_path / "adm.pt"
    torch.save(adm_state, path, _use_new_zipfile_serialization=not legacy)
    unet, _ = load_guided_diffusion(path, TINY_ADM)
    reference, _ = load_guided_diffusion(adm_state, TINY_ADM)
    for (name, a), b in zip(unet.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


def test_empty_adm_checkpoint(tmp_path):
    path = tmp_path / "256x256_diffusion_uncond.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_guided_diffusion(path)
    message = _message(info, path)
    assert "is empty (0 bytes)" in message and "interrupted" in message
    assert "download 256x256_diffusion_uncond.pt again" in message


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as info:
        load_guided_diffusion(path)
    assert "download x.pt again" in _message(info, path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_adm_checkpoint(tmp_path, adm_state, keep):
    whole = tmp_path / "whole.pt"
    torch.save(adm_state, whole)
    data = whole.read_bytes()
    path = tmp_path / "x.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="truncated") as info:
        load_guided_diffusion(path, TINY_ADM)
    assert "download x.pt again" in _message(info, path)


def test_truncated_legacy_format_checkpoint(tmp_path, adm_state):
    whole = tmp_path / "whole.pt"
    torch.save(adm_state, whole, _use_new_zipfile_serialization=False)
    data = whole.read_bytes()
    path = tmp_path / "x.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        load_guided_diffusion(path, TINY_ADM)
    assert "download x.pt again" in _message(info, path)


def test_error_page_saved_as_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    path.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    with pytest.raises(ValueError, match="web page") as info:
        load_guided_diffusion(path)
    _message(info, path)


def test_plain_pickle_and_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickle.pt"
    path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as info:
        load_guided_diffusion(path)
    _message(info, path)
    # A torch.save file holding an object that weights_only loading will not rebuild.
    path = tmp_path / "objects.pt"
    torch.save({"weight": torch.zeros(2), "optimizer": torch.optim.SGD([torch.zeros(1)], lr=0.1)}, path)
    with pytest.raises(ValueError, match="Python objects besides tensors") as info:
        load_guided_diffusion(path)
    _message(info, path)


def test_checkpoint_holding_no_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(TypeError, match="holds a list, not a state dict") as info:
        load_guided_diffusion(path)
    _message(info, path)
    path = tmp_path / "mixed.pt"
    torch.save({"weight": torch.zeros(2), "step": 3}, path)
    with pytest.raises(TypeError, match="entry 'step' is a int, not a tensor") as info:
        load_guided_diffusion(path)
    _message(info, path)


def test_folder_instead_of_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    path.mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder") as info:
        load_guided_diffusion(path)
    _message(info, path)


# --------------------------------------------------------------- the bundled default
@pytest.fixture
def bundle_copy(tmp_path):
    return shutil.copytree(DEFAULT_WEIGHTS_DIR, tmp_path / "weights")


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("rel", ["vit/model.safetensors", "unet/diffusion_pytorch_model.safetensors"])
def test_truncated_bundle_weights(bundle_copy, rel, verify):
    _truncate(bundle_copy / rel)
    with pytest.raises(BundleError) as info:
        load_default(path=bundle_copy, verify=verify)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert rel in message and "reinstall" in message and "train-default" in message
    # With the hash check the file is "corrupt"; without it, its size says what happened.
    assert ("SHA-256" in message) if verify else ("truncated" in message and str(bundle_copy / rel) in message)


@pytest.mark.parametrize(
    "rel, damage, expected",
    [
        ("vit/model.safetensors", b"", r"is empty \(0 bytes\)"),
        ("vit/model.safetensors", bytes(range(256)) * 8, "is not a safetensors file"),
        ("unet/diffusion_pytorch_model.safetensors", b"version https://git-lfs.github.com/spec/v1\n", "Git LFS"),
        ("vit/config.json", b"{\"architecture\": ", "is not valid JSON"),
        ("scheduler/scheduler_config.json", b"", r"is empty \(0 bytes\)"),
    ],
    ids=["empty-vit", "random-vit", "lfs-unet", "broken-vit-config", "empty-scheduler-config"],
)
def test_damaged_bundle_files_without_verify(bundle_copy, rel, damage, expected):
    (bundle_copy / rel).write_bytes(damage)
    with pytest.raises(BundleError, match=expected) as info:
        load_default(path=bundle_copy, verify=False)
    message = _message(info, bundle_copy / rel)
    assert "reinstall" in message and "train-default" in message


def test_intact_bundle_loads_without_verify(bundle_copy):
    assert load_default(path=bundle_copy, verify=False).image_size == 64


def test_load_vit_names_a_truncated_file(tmp_path):
    torch.manual_seed(0)
    folder = save_vit(build_vit(img_size=32, embed_dim=32, depth=1, num_heads=2), tmp_path / "vit")
    _truncate(folder / "model.safetensors", 0.9)
    for where in (folder, folder / "model.safetensors"):
        with pytest.raises(ValueError, match="truncated") as info:
            load_vit(where)
        assert "save_vit" in _message(info, folder / "model.safetensors")


def test_safetensors_with_trailing_bytes(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3)}, str(path))
    assert check_safetensors(path, "fix it") == path
    path.write_bytes(path.read_bytes() + b"\0" * 10)
    with pytest.raises(ValueError, match=r"corrupt \(10 bytes more than its header describes\); fix it"):
        check_safetensors(path, "fix it")


# ------------------------------------------------------------------- diffusers folders
@pytest.fixture
def unet_folder(tmp_path):
    torch.manual_seed(0)
    unet = build_unet(block_out_channels=(8, 16), down_block_types=("DownBlock2D",) * 2,
                      up_block_types=("UpBlock2D",) * 2, norm_num_groups=4, attention_head_dim=8,
                      sample_size=16)
    return save_denoiser(unet, build_scheduler(), tmp_path / "denoiser")


def test_intact_diffusers_folder_loads(unet_folder):
    assert isinstance(DiffusionDenoiser.from_pretrained(str(unet_folder), subfolder="unet"), DiffusionDenoiser)
    assert isinstance(DiffusionDenoiser.from_pretrained(unet_folder, subfolder="unet"), DiffusionDenoiser)


def test_missing_diffusers_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    for where in (missing, str(missing)):
        with pytest.raises(FileNotFoundError, match="does not exist") as info:
            DiffusionDenoiser.from_pretrained(where)
        assert "save_pretrained" in _message(info, missing)


def test_diffusers_folder_without_config(unet_folder):
    # The bundle root holds unet/ and scheduler/, not a UNet: the error points at the subfolder.
    with pytest.raises(FileNotFoundError, match=r"no config.json in .*subfolder='unet'") as info:
        DiffusionDenoiser.from_pretrained(str(unet_folder), local_files_only=True)
    _message(info, unet_folder)


@pytest.mark.parametrize("keep", [0.0, 0.5])
def test_diffusers_folder_with_damaged_weights(unet_folder, keep):
    weights = unet_folder / "unet" / "diffusion_pytorch_model.safetensors"
    _truncate(weights, keep)
    with pytest.raises(ValueError, match="empty" if keep == 0 else "truncated") as info:
        DiffusionDenoiser.from_pretrained(str(unet_folder), subfolder="unet", local_files_only=True)
    assert "save_pretrained" in _message(info, weights)


def test_diffusers_folder_without_weights(unet_folder):
    (unet_folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has config.json but no weights") as info:
        DiffusionDenoiser.from_pretrained(str(unet_folder), subfolder="unet", local_files_only=True)
    _message(info, unet_folder / "unet")


def test_diffusers_folder_with_broken_config(unet_folder):
    config = unet_folder / "unet" / "config.json"
    config.write_text('{"sample_size": 16,')
    with pytest.raises(ValueError, match="is not valid JSON") as info:
        load_denoiser(unet_folder)  # the models loader goes through the same path
    _message(info, config)


def test_diffusers_folder_with_missing_or_broken_scheduler(unet_folder):
    scheduler = unet_folder / "scheduler" / "scheduler_config.json"
    scheduler.write_text("not json")
    with pytest.raises(ValueError, match="is not valid JSON") as info:
        DiffusionDenoiser.from_pretrained(str(unet_folder), subfolder="unet", local_files_only=True)
    assert "scheduler=" in _message(info, scheduler)
    shutil.rmtree(unet_folder / "scheduler")
    with pytest.raises(FileNotFoundError, match="no scheduler_config.json") as info:
        DiffusionDenoiser.from_pretrained(str(unet_folder), subfolder="unet", local_files_only=True)
    _message(info, unet_folder / "scheduler")
    # An explicit scheduler object needs no scheduler folder.
    DiffusionDenoiser.from_pretrained(str(unet_folder), subfolder="unet", scheduler=build_scheduler())


def test_hub_ids_are_left_to_diffusers(tmp_path):
    assert local_model_folder("google/ddpm-cifar10-32", "model", "fix") is None
    assert local_model_folder(tmp_path, "model", "fix") == tmp_path
    for local in ("./x", "~/no-such-model-folder", "a/b/c", str(tmp_path / "x")):
        with pytest.raises(FileNotFoundError, match="does not exist; fix"):
            local_model_folder(local, "model", "fix")
