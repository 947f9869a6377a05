"""The bundled default models: quality on fresh images, integrity checks, loaders, the recipe.

Everything runs offline: the loaders are exercised only on files the tests write themselves.
"""

from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch

from captum_fvit.data import CLASS_NAMES, SPLIT_SEEDS, render_batch
from captum_fvit.denoise import DiffusionDenoiser
from captum_fvit.models import (
    DEFAULT_WEIGHTS_DIR,
    BundleError,
    build_scheduler,
    build_unet,
    file_sha256,
    load_default,
    load_denoiser,
    load_vit,
    save_denoiser,
    save_vit,
    verify_bundle,
)
from captum_fvit.models.quality import (
    classification_accuracy,
    denoising_psnr,
    rollout_mass_ratio,
)
from captum_fvit.models.recipe import ViTRecipe, quick_recipes, warmup_cosine
from captum_fvit.models.train import QUALITY_BARS, main, train_default, train_vit
from captum_fvit.space import resolve_normalization

#: A benchmark stream no model was trained on (training: 0, monitoring: 1, manifest metrics: 2).
FRESH_SEED = 2024
WEIGHT_FILES = ("vit/model.safetensors", "unet/diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def bundle():
    return load_default()


# --------------------------------------------------------------------- the shipped weights
def test_bundle_is_what_the_demo_needs(bundle):
    assert bundle.class_names == CLASS_NAMES
    assert bundle.image_size == 64
    assert not bundle.model.training
    assert all(block.attn.fused_attn for block in bundle.model.blocks), "ship with fused attention on"
    assert bundle.model.patch_embed.patch_size == (8, 8)
    assert bundle.model.patch_embed.grid_size == (8, 8)
    assert bundle.model.num_prefix_tokens == 1
    assert bundle.normalization.mean == (0.5, 0.5, 0.5) and bundle.normalization.std == (0.5, 0.5, 0.5)
    assert resolve_normalization(bundle.model) == bundle.normalization
    assert isinstance(bundle.denoiser, DiffusionDenoiser)
    assert bundle.denoiser.timestep(0.5) == 259


def test_shipped_vit_accuracy_on_fresh_images(bundle):
    # 2000 images: the model is at ~95.4 %, so a smaller sample would be dominated by its
    # sampling error (±0.9 % at 600 images) rather than by the model.
    accuracy = classification_accuracy(bundle.model, FRESH_SEED, 2000)
    assert accuracy >= QUALITY_BARS["accuracy"], f"accuracy {accuracy:.4f} on 2000 fresh images"


def test_shipped_vit_rollout_prefers_the_object(bundle):
    result = rollout_mass_ratio(bundle.model, FRESH_SEED, 200)
    assert 0.05 < result["mask_share"] < 0.25
    assert result["ratio"] > QUALITY_BARS["rollout_mass_ratio"], result


def test_shipped_denoiser_psnr_gain(bundle):
    result = denoising_psnr(bundle.denoiser, FRESH_SEED, 64, sigma=0.25, noise_seed=7)
    assert abs(result["noisy_db"] - 12.04) < 0.3  # 20·log10(1/0.25): the noise really is σ = 0.25
    assert result["gain_db"] >= QUALITY_BARS["psnr_gain_db"], result


def test_manifest_records_recipe_metrics_and_hashes(bundle):
    manifest = verify_bundle(DEFAULT_WEIGHTS_DIR)
    assert manifest == bundle.manifest
    assert manifest["quick"] is False
    assert set(WEIGHT_FILES) <= set(manifest["files"])
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    assert total <= 20 * 2**20
    metrics = manifest["metrics"]
    assert metrics["seed"] != manifest["recipe"]["vit"]["data_seed"] == SPLIT_SEEDS["train"]
    assert metrics["accuracy"]["n"] >= 1000 and metrics["accuracy"]["value"] >= QUALITY_BARS["accuracy"]
    assert metrics["rollout"]["ratio"] > QUALITY_BARS["rollout_mass_ratio"]
    assert metrics["denoising"]["gain_db"] >= QUALITY_BARS["psnr_gain_db"]
    assert metrics["passed"]["all"] is True
    for key in ("torch", "timm", "diffusers"):
        assert manifest["environment"][key]
    assert manifest["training"]["vit"]["steps"] == manifest["recipe"]["vit"]["steps"]


# ------------------------------------------------------------------------ integrity checks
@pytest.fixture
def bundle_copy(tmp_path):
    return shutil.copytree(DEFAULT_WEIGHTS_DIR, tmp_path / "weights")


def test_corrupt_weights_are_refused(bundle_copy):
    path = bundle_copy / WEIGHT_FILES[0]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt") as info:
        load_default(path=bundle_copy)
    message = str(info.value)
    assert WEIGHT_FILES[0] in message and "reinstall" in message and "train-default" in message


def test_missing_weights_are_refused(bundle_copy):
    (bundle_copy / WEIGHT_FILES[1]).unlink()
    with pytest.raises(BundleError, match=r"missing: .*diffusion_pytorch_model"):
        load_default(path=bundle_copy)


def test_missing_manifest_is_refused(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no weights manifest.*train-default"):
        load_default(path=bundle_copy)


def test_copy_loads_like_the_original(bundle, bundle_copy):
    copy = load_default(path=bundle_copy)
    x = bundle.normalization.from_pixels(render_batch(FRESH_SEED, range(4)).images)
    with torch.no_grad():
        torch.testing.assert_close(copy.model(x), bundle.model(x), rtol=0, atol=0)


# ------------------------------------------------------------------- loaders on local files
def _tiny_vit(**kwargs):
    torch.manual_seed(0)
    options = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 5}
    options.update(kwargs)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **options).eval()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_vit_timm_pretrained_from_local_file(tmp_path):
    from safetensors.torch import save_file

    source = _tiny_vit()
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    # The timm-name path, as with Hub weights, but pointed at a local file.
    loaded = load_vit(
        "vit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 5},
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5,
    )
    assert _same_weights(loaded, source) and not loaded.training
    # A bare file plus its architecture.
    bare = load_vit(path, architecture="vit_tiny_patch16_224", img_size=32, patch_size=8,
                    embed_dim=32, depth=2, num_heads=2, num_classes=5)
    assert _same_weights(bare, source)
    with pytest.raises(ValueError, match="architecture="):
        load_vit(path)


def test_load_vit_from_saved_folder(tmp_path):
    from captum_fvit.models import build_vit

    torch.manual_seed(0)
    source = build_vit(img_size=32, embed_dim=32, depth=2, num_heads=2).eval()
    folder = save_vit(source, tmp_path / "vit")
    for where in (folder, folder / "model.safetensors", str(folder)):
        loaded = load_vit(where)
        assert _same_weights(loaded, source)
        assert resolve_normalization(loaded).mean == (0.5, 0.5, 0.5)
    # timm itself reads the folder too.
    assert _same_weights(timm.create_model(f"local-dir:{folder}", pretrained=True), source)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (folder / "model.safetensors").unlink()
        load_vit(folder)
    with pytest.raises(FileNotFoundError):
        load_vit(tmp_path / "nothing-here")


def test_load_denoiser_from_saved_folder(tmp_path):
    torch.manual_seed(0)
    unet = build_unet(block_out_channels=(8, 16), down_block_types=("DownBlock2D",) * 2,
                      up_block_types=("UpBlock2D",) * 2, norm_num_groups=4, attention_head_dim=8,
                      sample_size=32)
    scheduler = build_scheduler()
    reference = DiffusionDenoiser(unet, scheduler)
    x = render_batch(FRESH_SEED, range(2), 32).images
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))

    folder = save_denoiser(unet, scheduler, tmp_path / "bundle")
    loaded = load_denoiser(folder)
    assert _same_weights(loaded.unet, unet)
    assert loaded.timestep(0.25) == reference.timestep(0.25) == 145
    torch.testing.assert_close(loaded(noisy, 0.1), reference(noisy, 0.1))

    # diffusers' flat layout (UNet and scheduler configs side by side) through the same loader.
    flat = tmp_path / "flat"
    unet.save_pretrained(str(flat))
    scheduler.save_pretrained(str(flat))
    assert _same_weights(load_denoiser(flat, num_steps=2).unet, unet)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_denoiser(tmp_path)


# ---------------------------------------------------------------------------- the recipe
def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def test_quick_training_writes_a_loadable_deterministic_bundle(tmp_path, capsys):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert main(["--out", str(out_a), "--quick", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    manifest_b = train_default(out_b, quick=True, progress=False)

    manifest_a = json.loads((out_a / "manifest.json").read_text())
    assert manifest_a["quick"] is True and manifest_a["seed"] == 0
    for rel in WEIGHT_FILES:
        assert manifest_a["files"][rel]["sha256"] == manifest_b["files"][rel]["sha256"] == file_sha256(out_b / rel)
    assert manifest_a["metrics"] == manifest_b["metrics"]
    assert manifest_a["training"]["vit"]["steps"] == quick_recipes()[0].steps
    assert set(manifest_a["metrics"]["passed"]) == {"accuracy", "rollout_mass_ratio", "psnr_gain_db", "all"}

    loaded = load_default(path=out_a)
    assert loaded.manifest["quick"] is True
    x = loaded.normalization.from_pixels(render_batch(FRESH_SEED, range(2)).images)
    assert loaded.model(x).shape == (2, len(CLASS_NAMES))


def test_the_seed_changes_the_weights():
    recipe = quick_recipes()[0]
    a = train_vit(recipe, seed=0, progress=False).model
    b = train_vit(recipe, seed=1, progress=False).model
    c = train_vit(recipe, seed=0, progress=False).model
    assert _same_weights(a, c) and not _same_weights(a, b)


def test_bad_arguments_are_reported(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--vit-steps", "0"]) == 2
    assert "--vit-steps must be at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_vit(ViTRecipe(steps=0), progress=False)
