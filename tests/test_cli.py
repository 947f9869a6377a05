"""``captum-fvit demo``: runs offline end to end on the bundled default, writes its report,
refuses bad --out."""

from __future__ import annotations

import json

import pytest

from captum_fvit.cli import main


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    code = main(["demo", "--out", str(out), "--images", "2", "--n-samples", "4", "--seed", "3"])
    return code, out


def test_demo_writes_report(demo_report, capsys):
    code, out = demo_report
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    rows = report["metrics"]
    assert {r["method"] for r in rows} == {"raw", "rollout", "grad_rollout"}
    assert {r["variant"] for r in rows} == {"vanilla", "dds"}
    assert {round(r["eps_255"]) for r in rows} == {0, 2, 4, 8}
    for row in rows:
        assert 0.0 <= row["topk_overlap"] <= 1.0
        assert 0.0 <= row["miou"] <= 1.0
    assert set(report["certificates"]) == {"rollout"}
    assert len(report["certificates"]["rollout"]["r_beta"]) == 2
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 6
    for figure in ("topk_overlap_vs_eps", "heatmaps_rollout", "certified_curves", "regions_rollout"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 1000


def test_demo_prints_summary_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--images", "1", "--n-samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "bundled default" in printed
    for method in ("raw", "rollout", "grad_rollout"):
        assert method in printed
    assert "accuracy under PGD" in printed and "report.html" in printed


def test_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["demo", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_out_that_cannot_be_created_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub")]) == 2
    assert "cannot create" in capsys.readouterr().err


def test_unwritable_out_is_refused(tmp_path, capsys, monkeypatch):
    import os

    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(folder) else real_access(p, mode)
    )
    assert main(["demo", "--out", str(folder)]) == 2
    assert "not writable" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["explode"])
    assert info.value.code == 2


# -- captum-fvit evaluate: user errors are one line and exit 2 ------------------------------
import textwrap  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

FACTORIES = textwrap.dedent(
    """
    import timm, torch, torchvision
    from captum_fvit.denoise import IdentityDenoiser

    def make():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                 patch_size=8, num_classes=6, embed_dim=48, depth=2,
                                 num_heads=3).eval()

    def cnn():
        return torchvision.models.resnet18(num_classes=6)

    def denoiser():
        return IdentityDenoiser()

    def not_a_denoiser():
        return 42
    """
)

TINY = ["--n-images", "1", "--n-samples", "1", "--eps", "0", "--methods", "raw", "--k", "3",
        "--variants", "vanilla", "--batch-size", "1", "--no-progress"]  # fmt: skip


@pytest.fixture
def in_factory_dir(tmp_path, monkeypatch):
    """A working directory holding cli_factories.py, imported from the current directory
    (not from sys.path set up by the test)."""
    (tmp_path / "cli_factories.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    import sys

    sys.modules.pop("cli_factories", None)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_evaluate_user_errors_are_one_line_exit_2(in_factory_dir, capsys, monkeypatch):
    out = ["--out", str(in_factory_dir / "o")]
    model = ["--model", "cli_factories:make"]
    cases = [
        ([*model, "--denoiser", "no/such_denoiser_folder"], "neither a local folder nor in the Hugging Face cache"),
        ([*model, "--denoiser", "./missing_folder"], "does not exist"),
        ([*model, "--denoiser", f"adm:{in_factory_dir / 'cli_factories.py'}"], "not an OpenAI guided-diffusion checkpoint"),
        ([*model, "--denoiser", "cli_factories:not_a_denoiser"], "must be a Denoiser"),
        ([*model, "--image-size", "0"], "--image-size must be a positive"),
        ([*model, "--image-size", "48", "--denoiser", "identity"], "does not accept 48x48 images"),
        (["--model", "cli_factories:cnn", "--denoiser", "identity"], "not a supported Vision Transformer"),
        ([*model, "--attack", "topk", "--norm", "l2"], "supports norm linf"),
        ([*model, "--n-images", "-1"], "--n-images must be at least 1"),
        ([*model, "--checkpoint", "nope.pt"], "--checkpoint nope.pt does not exist"),
    ]  # fmt: skip
    for args, message in cases:
        assert main(["evaluate", *args, *out]) == 2, args
        assert message in _error_line(capsys), args
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", *model, "--device", "cuda", *out]) == 2
    assert "CUDA is not available" in _error_line(capsys)
    # --debug shows the traceback instead (the exception propagates).
    with pytest.raises(ValueError, match="--image-size must be a positive"):
        main(["evaluate", *model, "--image-size", "0", "--debug", *out])


def test_evaluate_image_folder_labels_and_bad_files(in_factory_dir, capsys):
    rng = np.random.default_rng(0)
    for cls in ("n01", "n02"):
        _write_png(in_factory_dir / "data" / "images" / cls / "a.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    base = ["evaluate", "--model", "cli_factories:make", "--denoiser", "identity",
            "--data", str(in_factory_dir / "data"), *TINY, "--out", str(in_factory_dir / "o")]  # fmt: skip
    assert main(base) == 2
    assert "has class folders: give --labels" in _error_line(capsys)
    (in_factory_dir / "labels.json").write_text(json.dumps({"n01": 5, "n02": 2}))
    assert main([*base, "--labels", str(in_factory_dir / "labels.json")]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (in_factory_dir / "o" / "results.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows if r["kind"] == "explain"] == [5]  # n01 → 5, not index 0
    (in_factory_dir / "bad.json").write_text(json.dumps({"cat": 1}))
    assert main([*base, "--labels", str(in_factory_dir / "bad.json")]) == 2
    assert "no class id for 2 of the 2 class folders" in _error_line(capsys)
    (in_factory_dir / "data" / "images" / "n01" / "a.png").write_bytes(b"garbage")
    assert main([*base, "--labels", "index"]) == 2
    assert "cannot read image file" in (line := _error_line(capsys)) and "a.png" in line


def test_evaluate_custom_denoiser_factory_progress_in_images_and_checkpoint(in_factory_dir, capsys):
    import sys

    sys.path.insert(0, str(in_factory_dir))
    try:
        import cli_factories
    finally:
        sys.path.remove(str(in_factory_dir))
    model = cli_factories.make()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    torch.save(model.state_dict(), in_factory_dir / "weights.pt")
    from captum_fvit.cli_specs import resolve_model

    loaded = resolve_model("cli_factories:make", checkpoint=str(in_factory_dir / "weights.pt"))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    args = ["evaluate", "--model", "cli_factories:make", "--checkpoint", "weights.pt",
            "--denoiser", "cli_factories:denoiser", *TINY[:-1], "--variants", "dds",
            "--n-images", "2", "--out", "o"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "2/2" in captured.err and "img" in captured.err  # progress counted in images
    setup = json.loads((in_factory_dir / "o" / "results.json").read_text())["setup"]
    assert setup["denoiser"] == "cli_factories:denoiser" and "weights.pt" in setup["model"]


def _no_network(monkeypatch):
    """Fail the test if anything tries to open a connection (nothing may download)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to open a network connection: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_timm_model_offline_fails_in_seconds(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _no_network(monkeypatch)
    from captum_fvit import cli_specs as specs

    monkeypatch.setattr(specs, "_cached_weights", lambda hub_id: None, raising=False)
    start = time.perf_counter()
    assert main(["evaluate", "--model", "timm:vit_tiny_patch16_224", "--out", str(tmp_path)]) == 2
    assert time.perf_counter() - start < 15
    line = _error_line(capsys)
    assert "not in the Hugging Face cache" in line and "--checkpoint" in line
    assert main(["evaluate", "--model", "timm:no_such_vit_xyz", "--out", str(tmp_path)]) == 2
    assert "timm has no model" in _error_line(capsys)



def test_evaluate_certify_radius_runs_the_sequential_test(in_factory_dir, capsys):
    """--certify-radius: rows carry the sequential decision and the samples it used, which
    equal FaithfulRegion.decide(x, r) on the same images and seed."""
    args = ["evaluate", "--model", "cli_factories:make", "--denoiser", "identity", *TINY,
            "--n-images", "2", "--certify", "--certify-n-samples", "64", "--certify-radius", "0.001",
            "--sigma", "0.1", "--out", "o"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (in_factory_dir / "o" / "results.jsonl").read_text().splitlines()]
    certified = [r for r in rows if r.get("kind") == "certify"]
    assert len(certified) == 2
    for row in certified:
        assert row["decision"] in ("certified", "not_certified", "undecided")
        assert 1 <= row["samples_used"] <= 64 and row["certify_radius"] == 0.001
    assert main([*args[:-1], "o2", "--certify-radius", "-1"]) == 2
    assert "certify_radius" in _error_line(capsys)


def test_paper_preset_refuses_options_it_would_ignore(tmp_path, capsys):
    assert main(["evaluate", "--preset", "paper", "--model", "timm:x", "--out", str(tmp_path)]) == 2
    assert "--model" in _error_line(capsys)
    assert main(["evaluate", "--preset", "paper", "--attack", "topk", "--out", str(tmp_path)]) == 2
    assert "--attack" in _error_line(capsys)


def test_paper_preset_forwards_its_options(tmp_path, capsys, monkeypatch):
    import captum_fvit.evaluate.experiment.presets as presets
    import captum_fvit.evaluate.experiment.runner as runner

    seen = {}

    class Result:
        table = "| table |"
        evaluation = None

    def fake(name, out, n_images, **kwargs):
        seen.update(name=name, out=out, n_images=n_images, **kwargs)
        return Result()

    monkeypatch.setattr(presets, "run_preset", fake)
    monkeypatch.setattr(runner, "write_report", lambda result, out: {})
    args = ["evaluate", "--preset", "paper", "--out", str(tmp_path), "--n-images", "5",
            "--n-samples", "3", "--eps", "0", "8", "--methods", "raw", "--resume", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    resolved = {k: seen.pop(k) for k in ("model", "dataset", "denoiser", "device", "setup", "n_boot")}
    assert seen == {
        "name": "paper", "out": tmp_path, "n_images": 5, "resume": True, "progress": False,
        "n_samples": 3, "eps": (0.0, 8 / 255), "methods": ("raw",),
    }  # fmt: skip
    assert "| table |" in capsys.readouterr().out
    # The user's options reach the runner: the bundled default here, 5 shapes images.
    assert isinstance(resolved["model"], torch.nn.Module) and len(resolved["dataset"]) == 5
    assert resolved["setup"]["model"] == "default" and resolved["n_boot"] == 2000


def test_paper_preset_runs_on_the_users_model_denoiser_and_data(in_factory_dir, capsys):
    """--preset paper with --model/--denoiser/--data: the one runner's rows (every attack of
    the preset, with its threat, every variant), its report and the preset's table."""
    args = ["evaluate", "--preset", "paper", "--model", "cli_factories:make", "--denoiser",
            "cli_factories:denoiser", "--data", "shapes", "--n-images", "2", "--batch-size", "2",
            "--n-samples", "1", "--methods", "raw", "--eps", "0", "8", "--k", "3",
            "--attack-steps", "1", "--adaptive-steps", "1", "--n-eot", "1", "--n-boot", "50",
            "--no-progress", "--out", "o"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    out = in_factory_dir / "o"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    explain = [r for r in rows if r["kind"] == "explain"]
    threats = {(r["attack"], r["threat"]) for r in explain}
    assert threats == {("clean", None), ("pgd", "transfer"), ("topk", "transfer"),
                       ("smooth_pgd", "adaptive"), ("adaptive_topk", "adaptive")}  # fmt: skip
    assert {r["variant"] for r in explain} == {"vanilla", "smoothgrad", "identity", "dds"}
    assert len(explain) == 2 * 4 * 5  # images × variants × (clean + 4 attacks), one method
    assert all("floor_overlap" in r for r in explain if r["variant"] != "vanilla")
    setup = json.loads((out / "results.json").read_text())["setup"]
    assert setup["model"] == "cli_factories:make" and setup["denoiser"] == "cli_factories:denoiser"
    table = (out / "paper_table.md").read_text()
    assert "| smooth_pgd | adaptive | 8 |" in table and "| raw | topk | transfer | 8 | 2 |" in table
    assert table in capsys.readouterr().out
    # --table-only rewrites the same table from the rows on disk.
    assert main(["evaluate", "--preset", "paper", "--table-only", "--n-boot", "50", "--out", "o"]) == 0
    assert (out / "paper_table.md").read_text() == table


def test_deprecated_samples_flag_still_works_with_a_message(in_factory_dir, capsys):
    args = ["evaluate", "--model", "cli_factories:make", "--denoiser", "identity", *TINY,
            "--variants", "dds", "--samples", "1", "--n-samples", "16", "--out", "o"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "--samples is deprecated" in err and "--n-samples" in err
    header = json.loads((in_factory_dir / "o" / "results.jsonl").read_text().splitlines()[0])
    assert header["config"]["n_samples"] == 1


# -- the paper preset through the one runner (moved from test_adaptive.py) ---------------------
def test_paper_preset_small_run_streams_rows_resumes_and_writes_the_table(tmp_path):
    from conftest import make_timm_vit

    from captum_fvit import AttentionMap, DDSAttention
    from captum_fvit.data import ShapesBenchmark
    from captum_fvit.evaluate import pgd_attack, run_paper_preset
    from captum_fvit.evaluate.experiment.presets import ATTACK_NAMES
    from captum_fvit.space import resolve_normalization

    model = make_timm_vit(depth=2, num_classes=6)
    dataset = ShapesBenchmark.from_split("test", 3, image_size=32)
    options = dict(model=model, denoiser=None, dataset=dataset, n_samples=2, n_eot=1,
                   adaptive_steps=1, attack_steps=2, batch_size=2, eps=(0, 8 / 255), k=4,
                   n_boot=100, n_adaptive_images=2, progress=False)  # fmt: skip
    first = run_paper_preset(tmp_path, 3, resume=False, **options)
    # Batch 0 (images 0, 1): clean + 4 attacks; batch 1 (image 2): clean + the 2 transfer
    # attacks (the adaptive ones are for the first 2 images only).
    assert first.units_run == 5 + 3 and first.units_skipped == 0
    maps = [r for r in first.rows if r["kind"] == "explain" and r["attack"] != "clean"]
    for attack in ATTACK_NAMES:
        images = {r["image"] for r in maps if r["attack"] == attack}
        assert images == ({0, 1} if attack in ("smooth_pgd", "adaptive_topk") else {0, 1, 2})
    assert {r["variant"] for r in maps} == {"vanilla", "smoothgrad", "identity", "dds"}
    assert all(0 <= r["topk_overlap"] <= 1 for r in maps)
    assert all("floor_overlap" in r and "topk_overlap_indep" in r for r in maps if r["variant"] != "vanilla")
    # With the identity as "denoiser", DDS and the identity baseline are the same pipeline.
    pairs = {(r["image"], r["attack"], r["method"], r["variant"]): r for r in maps}
    for (image, attack, method, variant), row in pairs.items():
        if variant == "dds":
            assert row["topk_overlap"] == pairs[(image, attack, method, "identity")]["topk_overlap"]
    # Independent recomputation of one cell: the vanilla rollout overlap under transfer PGD
    # (batch 0 attacks with seed + 0).
    batch = dataset.batch([0, 1])
    normalization = resolve_normalization(model)
    x = normalization.from_pixels(batch["image"])
    adv = pgd_attack(model, x, batch["label"], 8 / 255, steps=2, normalization=normalization, seed=0)
    explainer = AttentionMap(model, "rollout")
    a = explainer.token_map(x, target=batch["label"])
    b = explainer.token_map(adv, target=batch["label"])
    for i in range(2):
        expected = len(set(a[i].topk(4).indices.tolist()) & set(b[i].topk(4).indices.tolist())) / 4
        assert pairs[(i, "pgd", "rollout", "vanilla")]["topk_overlap"] == expected
    # The DDS rows are DDSAttention's: its smoothed prediction on the clean images.
    dds = DDSAttention(model, None, "raw", sigma=0.25, n_samples=2).details(x, target=batch["label"], seed=0)
    clean = {r["image"]: r for r in first.rows if r["kind"] == "explain" and r["attack"] == "clean"
             and r["method"] == "raw" and r["variant"] == "dds"}  # fmt: skip
    assert [clean[i]["pred_smoothed"] for i in range(2)] == dds.predicted.tolist()
    table = (tmp_path / "paper_table.md").read_text()
    assert table == first.table
    for needle in ("Accuracy under attack", "Monte-Carlo floor", "DDS floor", *ATTACK_NAMES, " [0."):
        assert needle in table

    # Resume: nothing left to do; after a "kill" that lost the last unit and tore a line,
    # only that unit runs again and the rows come back identical.
    again = run_paper_preset(tmp_path, 3, resume=True, **options)
    assert again.units_run == 0 and again.units_skipped == 8
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])  # the last unit: one attack at one ε for the last batch
    unit = [i for i, line in enumerate(lines) if i > 0 and (json.loads(line)["attack"], json.loads(line)["image"]) == (last["attack"], last["image"])]
    assert unit == list(range(unit[0], len(lines)))  # a unit's rows are one write
    path.write_text("".join(lines[: unit[0]]) + lines[unit[0]][:20])
    resumed = run_paper_preset(tmp_path, 3, resume=True, **options)
    assert resumed.units_run == 1
    assert resumed.rows == first.rows
    with pytest.raises(ValueError, match="other settings"):
        run_paper_preset(tmp_path, 3, resume=True, **(options | {"n_samples": 3}))


def test_timm_model_loads_cached_weights_without_network(tmp_path, monkeypatch):
    """timm:NAME with weights in the local cache: the real loading path (timm
    ``pretrained=True`` with the cached file) on a checkpoint this test saves itself."""
    import timm
    from safetensors.torch import save_file

    from captum_fvit import cli_specs as specs

    _no_network(monkeypatch)
    torch.manual_seed(3)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    monkeypatch.setattr(specs, "_cached_weights", lambda hub_id: str(weights))
    loaded = specs.resolve_model("timm:vit_tiny_patch16_224")
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
