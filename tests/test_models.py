"""The bundled default models: quality on fresh images, integrity checks, loaders, the recipe.

Everything runs offline: the loaders are exercised only on files the tests write themselves.
"""

from __future__ import annotations

import contextlib
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
from captum_fvit.space import resolve_normalization
from captum_fvit.training import (
    QUALITY_BARS,
    TRAIN_OPTIONS,
    ViTRecipe,
    classification_accuracy,
    denoising_psnr,
    quick_recipes,
    rollout_mass_ratio,
    train_default,
    train_from_options,
    train_vit,
    warmup_cosine,
)

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
    from captum_fvit.cli import main as cli_main

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert cli_main(["train-default", "--out", str(out_a), "--quick", "--no-progress"]) == 0
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
    from captum_fvit.cli import main as cli_main

    assert cli_main(["train-default", "--out", str(tmp_path), "--vit-steps", "0"]) == 2
    assert "--vit-steps must be an integer ≥ 1, got 0" in capsys.readouterr().err
    assert cli_main(["train-default", "--out", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads must be an integer ≥ 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1"):
        train_vit(ViTRecipe(steps=0), progress=False)
    # The same mistakes raise what captum_fvit.validation raises everywhere, before any training.
    with pytest.raises(TypeError, match="steps must be an integer"):
        train_vit(ViTRecipe(steps=2.5), progress=False)
    with pytest.raises(TypeError, match="seed must be an int"):
        train_vit(quick_recipes()[0], seed=1.5, progress=False)
    with pytest.raises(TypeError, match="seed must be an int"):
        train_vit(quick_recipes()[0], seed=None, progress=False)
    with pytest.raises(TypeError, match="vit_steps must be an integer"):
        train_default(tmp_path / "x", vit_steps=2.5)
    with pytest.raises(ValueError, match="unet_steps must be an integer ≥ 1"):
        train_default(tmp_path / "x", unet_steps=0)
    with pytest.raises(TypeError, match="threads must be an integer"):
        train_default(tmp_path / "x", threads=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        train_default(tmp_path / "file", quick=True)
    with pytest.raises(ValueError, match="--unet-steps must be an integer ≥ 1"):
        train_from_options({"out": str(tmp_path / "y"), "unet_steps": -3})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------ the package layout and the old import paths
def test_training_lives_outside_the_runtime_models_package():
    """models/ holds runtime loaders only (plus the deprecated train.py forwarder); training/
    has no argparse of its own: the CLI builds its arguments from TRAIN_OPTIONS."""
    import inspect
    import re
    from pathlib import Path

    import captum_fvit.models as models
    import captum_fvit.training as training

    names = {p.name for p in Path(models.__file__).parent.glob("*.py")}
    assert names == {"__init__.py", "default.py", "denoiser.py", "manifest.py", "train.py", "vit.py"}
    for path in Path(training.__file__).parent.glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+argparse", path.read_text(), re.M), path.name
    assert [option.flag for option in TRAIN_OPTIONS] == [
        "--out", "--seed", "--quick", "--vit-steps", "--unet-steps", "--threads", "--no-progress",
    ]
    keywords = set(inspect.signature(train_default).parameters)
    assert {"out_dir", "seed", "quick", "vit_steps", "unet_steps", "threads", "progress"} <= keywords


def test_old_training_imports_warn_and_forward(tmp_path, capsys):
    import argparse

    import captum_fvit.models as models
    import captum_fvit.training as training
    from captum_fvit.models import train as old

    with pytest.warns(DeprecationWarning, match="captum_fvit.training.train_vit"):
        assert old.train_vit is training.train_vit
    with pytest.warns(DeprecationWarning, match="captum_fvit.training.QUALITY_BARS"):
        assert old.QUALITY_BARS is QUALITY_BARS
    with pytest.raises(AttributeError):
        old.no_such_name
    with pytest.warns(DeprecationWarning, match="TRAIN_OPTIONS"):
        parser = old.add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", str(tmp_path), "--vit-steps", "0"])
    assert (args.out, args.seed, args.quick, args.threads, args.no_progress) == (str(tmp_path), 0, False, 1, False)
    with pytest.warns(DeprecationWarning, match="train_from_options"), pytest.raises(ValueError, match="--vit-steps"):
        old.run_from_args(args)
    with pytest.warns(DeprecationWarning, match="cli.main"):
        assert old.main(["--out", str(tmp_path), "--vit-steps", "0"]) == 2
    assert "--vit-steps must be an integer ≥ 1" in capsys.readouterr().err
    with pytest.warns(DeprecationWarning, match="captum_fvit.training.train_default"):
        with pytest.raises(ValueError, match="vit_steps must be an integer ≥ 1"):
            models.train_default(tmp_path, vit_steps=0)


# ------------------------------------------- the shared training loop vs a plain reference
_TINY_VIT = {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
_TINY_UNET = {"sample_size": 32, "block_out_channels": (8, 16, 16), "norm_num_groups": 4, "attention_head_dim": 8}


@contextlib.contextmanager
def _one_thread():
    """torch on one CPU thread, as the training functions run by default (``threads=1``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _plain_step(optimizer, params, loss, clip):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def _reference_vit(recipe, seed):
    """The recipe written out as two plain loops (token-label stage, then fine-tuning)."""
    import numpy as np
    import torch.nn.functional as F

    from captum_fvit.models import build_vit
    from captum_fvit.training import token_labels
    from captum_fvit.space import Normalization

    norm = Normalization(tuple(recipe.mean), tuple(recipe.std))
    size, patch = recipe.model_kwargs["img_size"], recipe.model_kwargs["patch_size"]
    torch.manual_seed(seed)
    model = build_vit(recipe.architecture, **recipe.model_kwargs)
    head = torch.nn.Linear(model.embed_dim, len(CLASS_NAMES) + 1)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas, foreach=False)
    model.train()
    losses = []
    for step in range(recipe.steps):
        lr = recipe.lr * warmup_cosine(step, recipe.steps, recipe.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = render_batch(recipe.data_seed, np.arange(step * recipe.batch_size, (step + 1) * recipe.batch_size), size)
        features = model.forward_features(norm.from_pixels(batch.images))
        loss = F.cross_entropy(model.forward_head(features), batch.labels, label_smoothing=recipe.label_smoothing)
        targets = token_labels(batch.masks, batch.labels, patch, recipe.token_label_threshold)
        token_loss = F.cross_entropy(head(features[:, 1:]).reshape(-1, len(CLASS_NAMES) + 1), targets.reshape(-1))
        _plain_step(opt, params, loss + recipe.token_label_weight * token_loss, recipe.grad_clip)
        losses.append(float(loss.detach()))
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.finetune_lr, weight_decay=recipe.weight_decay, betas=recipe.betas,
                            foreach=False)
    ft_losses = []
    for step in range(recipe.finetune_steps):
        lr = recipe.finetune_lr * warmup_cosine(step, recipe.finetune_steps, recipe.finetune_warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        first = (recipe.steps + step) * recipe.batch_size
        batch = render_batch(recipe.data_seed, np.arange(first, first + recipe.batch_size), size)
        loss = F.cross_entropy(model(norm.from_pixels(batch.images)), batch.labels,
                               label_smoothing=recipe.label_smoothing)
        _plain_step(opt, params, loss, recipe.grad_clip)
        ft_losses.append(float(loss.detach()))
    return model, losses, ft_losses


def _reference_unet(recipe, seed):
    import numpy as np
    import torch.nn.functional as F

    from captum_fvit.denoise import timestep_for_sigma

    scheduler = build_scheduler(**recipe.scheduler_config)
    abar = scheduler.alphas_cumprod.to(torch.float32)
    t_max = timestep_for_sigma(scheduler.alphas_cumprod, recipe.max_sigma)
    torch.manual_seed(seed)
    unet = build_unet(**recipe.unet_config)
    gen = torch.Generator().manual_seed(seed + 1)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas, foreach=False)
    unet.train()
    losses = []
    for step in range(recipe.steps):
        lr = recipe.lr * warmup_cosine(step, recipe.steps, recipe.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = np.arange(step * recipe.batch_size, (step + 1) * recipe.batch_size)
        x0 = 2.0 * render_batch(recipe.data_seed, idx, recipe.unet_config["sample_size"]).images - 1.0
        t = torch.randint(0, t_max + 1, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(unet(a.sqrt() * x0 + (1.0 - a).sqrt() * noise, t).sample, noise)
        _plain_step(opt, params, loss, recipe.grad_clip)
        losses.append(float(loss.detach()))
    return unet, losses


def test_shared_training_loop_matches_plain_loops_bit_for_bit():
    """train_vit (both stages, with monitoring on) and train_denoiser run through one shared
    loop; at tiny scale their weights and logged losses equal plain written-out loops exactly."""
    import numpy as np
    from dataclasses import replace

    from captum_fvit.training import train_denoiser

    vit_recipe, unet_recipe, _ = quick_recipes()
    vit_recipe = replace(vit_recipe, steps=3, batch_size=4, finetune_steps=2,
                         model_kwargs={**vit_recipe.model_kwargs, **_TINY_VIT})
    unet_recipe = replace(unet_recipe, steps=2, batch_size=2, unet_config={**unet_recipe.unet_config, **_TINY_UNET})

    trained = train_vit(vit_recipe, seed=3, progress=False, val_every=2, val_images=8)
    with _one_thread():  # train_vit runs on threads=1; bit-for-bit needs the same reductions
        reference, losses, ft_losses = _reference_vit(vit_recipe, seed=3)
    assert _same_weights(trained.model, reference)
    assert trained.log["final_loss"] == np.mean(losses)
    assert trained.log["finetune"]["final_loss"] == np.mean(ft_losses)
    assert set(trained.log["val_accuracy"]) == {"2", "3"}  # monitoring ran and left the weights alone
    assert set(trained.log["finetune"]["val_accuracy"]) == {"2"}

    denoiser = train_denoiser(unet_recipe, seed=3, progress=False)
    with _one_thread():
        unet, unet_losses = _reference_unet(unet_recipe, seed=3)
    assert _same_weights(denoiser.model.unet, unet)
    assert denoiser.log["final_loss"] == np.mean(unet_losses)
    # The check has teeth: one more step of the reference gives other weights.
    with _one_thread():
        longer, _ = _reference_unet(replace(unet_recipe, steps=3), seed=3)
    assert not _same_weights(longer, unet)
