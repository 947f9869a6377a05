"""The evaluation runner, its report, the ``captum-fvit evaluate`` CLI (offline, tiny
models) and the Quantus adapter."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import numpy as np
import pytest
import torch
from conftest import make_timm_vit

from captum_fvit import AttentionMap
from captum_fvit.cli import main
from captum_fvit.data import ShapesBenchmark
from captum_fvit.evaluate import (
    EvaluationConfig,
    QuantusExplainFunc,
    evaluate,
    spearman,
    topk_overlap,
    write_report,
)
from captum_fvit.space import resolve_normalization


@pytest.fixture(scope="module")
def shapes_vit():
    return make_timm_vit(depth=2, num_classes=6)


def test_runner_metrics_match_direct_computation(shapes_vit, tmp_path):
    dataset = ShapesBenchmark(4, image_size=32, seed=9)
    config = EvaluationConfig(
        methods=["rollout"], eps=[0.0, 4 / 255], n_samples=2, k=4, batch_size=4, seed=3
    )
    result = evaluate(shapes_vit, dataset, config=config, progress=False)
    assert result.n_images == 4
    rows = {(r["variant"], r["eps"]): r for r in result.rows}
    assert rows[("vanilla", 0.0)]["topk_overlap"] == 1.0 and rows[("dds", 0.0)]["spearman"] == 1.0
    assert set(rows) == {("vanilla", 0.0), ("vanilla", 4 / 255), ("dds", 0.0), ("dds", 4 / 255)}

    # Recompute the vanilla row at ε = 4/255 directly with the same attack and seed.
    from captum_fvit.evaluate import pgd_attack

    batch = dataset.batch(range(4))
    norm = resolve_normalization(shapes_vit)
    x = norm.from_pixels(batch["image"])
    x_adv = pgd_attack(shapes_vit, x, batch["label"], 4 / 255, steps=10, normalization=norm, seed=3)
    explainer = AttentionMap(shapes_vit, "rollout")
    clean, attacked = explainer.token_map(x), explainer.token_map(x_adv)
    row = rows[("vanilla", 4 / 255)]
    assert row["topk_overlap"] == pytest.approx(float(topk_overlap(clean, attacked, 4).mean()))
    assert row["spearman"] == pytest.approx(float(spearman(clean, attacked).mean()), abs=1e-6)
    with torch.no_grad():
        accuracy = float((shapes_vit(x_adv).argmax(1) == batch["label"]).float().mean())
    assert result.accuracy[f"{4 / 255:.6g}"] == pytest.approx(accuracy)
    assert 0 <= row["miou"] <= 1 and 0 <= row["pixel_accuracy"] <= 1

    paths = write_report(result, tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["n_images"] == 4 and len(report["metrics"]) == 4
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") >= 3  # self-contained figures
    assert (tmp_path / "figures" / "topk_overlap_vs_eps.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "heatmaps_rollout.png").stat().st_size > 1000
    assert "| rollout | dds |" in paths["markdown"].read_text()


def test_runner_with_certificates(shapes_vit, tmp_path):
    dataset = ShapesBenchmark(2, image_size=32, seed=4)
    config = EvaluationConfig(
        methods=["raw"],
        variants=["dds"],
        eps=[0.0],
        attack="none",
        n_samples=2,
        k=3,
        certify=True,
        certify_n_samples=40,
        certify_n_select=8,
        batch_size=2,
    )
    result = evaluate(shapes_vit, dataset, config=config, progress=False)
    data = result.certificates["raw"]
    assert len(data["r_beta"]) == 2 and len(data["fraction_r_beta"]) == len(data["radius_grid"])
    write_report(result, tmp_path)
    assert (tmp_path / "figures" / "certified_curves.png").exists()
    assert (tmp_path / "figures" / "regions_raw.png").exists()


def test_cli_evaluate_end_to_end(tmp_path, monkeypatch, capsys):
    module = tmp_path / "tiny_models_for_cli.py"
    module.write_text(
        textwrap.dedent(
            """
            import timm, torch
            def make():
                torch.manual_seed(0)
                return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                         patch_size=8, num_classes=6, depth=2)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--model", "tiny_models_for_cli:make",
            "--denoiser", "identity",
            "--n-images", "2",
            "--n-samples", "2",
            "--eps", "0", "2",
            "--methods", "raw",
            "--k", "3",
            "--batch-size", "2",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    assert "| raw | dds | 2 |" in capsys.readouterr().out
    for name in ("results.json", "summary.md", "report.html"):
        assert (out / name).stat().st_size > 100
    assert list((out / "figures").glob("*.png"))


def test_cli_evaluate_bad_input(tmp_path, capsys):
    args = ["evaluate", "--model", "timm_does_not_exist.module:make", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["evaluate", "--eps", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--eps must be" in capsys.readouterr().err
    (tmp_path / "empty" / "images").mkdir(parents=True)
    bad_data = ["evaluate", "--model", "conftest:make_timm_vit", "--denoiser", "identity"]
    bad_data += ["--data", str(tmp_path / "empty")]
    assert main([*bad_data, "--out", str(tmp_path / "o")]) == 2
    assert "holds no image" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="unknown method"):
        EvaluationConfig(methods=["lrp"]).validate()
    with pytest.raises(ValueError, match="unknown attack"):
        EvaluationConfig(attack="fgsm").validate()
    with pytest.raises(ValueError, match="eps must be finite and ≥ 0"):
        EvaluationConfig(eps=[-0.1]).validate()
    with pytest.raises(ValueError, match="variants"):
        EvaluationConfig(variants=["smooth"]).validate()
    with pytest.raises(ValueError, match="empty"):
        evaluate(make_timm_vit(depth=1), [], progress=False)


def test_quantus_adapter_runs_metrics_one_score_per_input(shapes_vit):
    import quantus

    batch = ShapesBenchmark(4, image_size=32, seed=3).batch(range(4))
    norm = resolve_normalization(shapes_vit)
    x = norm.from_pixels(batch["image"]).numpy()
    y = batch["label"].numpy()
    s = batch["mask"].numpy().astype(np.float32)
    plain = QuantusExplainFunc.attention_map("rollout")
    # The adapter returns the channel-mean of the Captum attribution, N×1×H×W numpy.
    a = plain(shapes_vit, x, y)
    expected = AttentionMap(shapes_vit, "rollout").attribute(torch.from_numpy(x), target=torch.from_numpy(y))
    np.testing.assert_allclose(a, expected.mean(1, keepdim=True).numpy(), rtol=1e-6)
    for explain in (plain, QuantusExplainFunc.dds(None, "rollout", sigma=0.1, n_samples=2)):
        sensitivity = quantus.MaxSensitivity(nr_samples=2, disable_warnings=True)(
            model=shapes_vit, x_batch=x, y_batch=y, a_batch=None, explain_func=explain, device="cpu"
        )
        localisation = quantus.RelevanceRankAccuracy(disable_warnings=True)(
            model=shapes_vit, x_batch=x, y_batch=y, a_batch=None, s_batch=s,
            explain_func=explain, device="cpu",
        )  # fmt: skip
        assert len(sensitivity) == 4 and len(localisation) == 4
        assert all(np.isfinite(v) and v >= 0 for v in sensitivity)
        assert all(0 <= v <= 1 for v in localisation)


def test_quantus_adapter_on_a_hugging_face_model():
    """Quantus calls the model itself: an HF classifier wrapped by ``model_for_quantus``
    gives the same faithfulness scores as the same network returning plain logits."""
    import quantus
    from conftest import make_hf_vit

    from captum_fvit.model_io import LogitsModel

    model = make_hf_vit()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()
    y = np.array([0, 1, 2])
    explain = QuantusExplainFunc.attention_map("rollout")
    wrapped = QuantusExplainFunc.model_for_quantus(model)
    assert isinstance(wrapped, LogitsModel) and QuantusExplainFunc.model_for_quantus(wrapped) is wrapped
    np.testing.assert_allclose(explain(wrapped, x, y), explain(model, x, y))
    metric = dict(nr_runs=3, subset_size=16, disable_warnings=True, display_progressbar=False)
    scores = quantus.FaithfulnessCorrelation(**metric)(
        model=wrapped, x_batch=x, y_batch=y, a_batch=None, explain_func=explain, device="cpu"
    )
    assert len(scores) >= 1 and all(np.isfinite(scores))
    with pytest.raises(ValueError, match="HuggingFace"):  # why the wrapper is needed
        quantus.FaithfulnessCorrelation(**metric)(
            model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=explain, device="cpu"
        )


def test_config_old_names_warn_and_several_attacks_validate():
    with pytest.warns(DeprecationWarning, match="certify_n_select"):
        config = EvaluationConfig(certify_n0=8)
    assert config.certify_n_select == 8 and "certify_n0" not in config.to_dict()
    several = EvaluationConfig(attack=("pgd", "smooth_pgd", "adaptive_topk"))
    several.validate()
    assert several.to_dict()["threats"] == {"pgd": "transfer", "smooth_pgd": "adaptive",
                                            "adaptive_topk": "adaptive"}  # fmt: skip
    with pytest.raises(ValueError, match="unknown attack"):
        EvaluationConfig(attack=("pgd", "fgsm")).validate()
    with pytest.raises(ValueError, match="supports norm linf"):
        EvaluationConfig(attack=("pgd", "topk"), norm="l2").validate()
    assert EvaluationConfig(attack="none").attacks == ()


def test_config_old_certify_n_warns_and_sets_certify_n_samples():
    with pytest.warns(DeprecationWarning, match="certify_n_samples"):
        config = EvaluationConfig(certify_n=40)
    assert config.certify_n_samples == 40 and "certify_n" not in config.to_dict()
    again = dataclasses.replace(config, k=5)  # replace() passes the init-only old names as None
    assert again.certify_n_samples == 40 and again.k == 5
    with pytest.raises(TypeError, match="certify_n_samples= only"):
        EvaluationConfig(certify_n=40, certify_n_samples=50)
