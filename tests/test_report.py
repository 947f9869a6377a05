"""The evaluation report a person reads: setup, explained metrics, colour bars, legends that
hide no line, plain and smoothed accuracy under attack, and a drill-down per image.

A small synthetic evaluation (hand-written rows and maps) goes through the real
``aggregate_rows`` and ``write_report``; the figures are checked on the matplotlib objects
(colour-bar axes, legend placement) and in the HTML page (as embedded ``<img>``).
"""

from __future__ import annotations

import re
from html import unescape

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captum_fvit.evaluate.report import figures  # noqa: E402
from captum_fvit.evaluate.experiment.aggregate import aggregate_rows, smoothed_accuracy_under_attack  # noqa: E402
from captum_fvit.evaluate.experiment.config import EvaluationConfig  # noqa: E402
from captum_fvit.evaluate.report.write import METRIC_NOTES, write_report  # noqa: E402

EPS = [0.0, 4 / 255, 8 / 255]
METHODS = ["raw", "rollout"]
N = 3


def _rows() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for image in range(N):
        for method in METHODS:
            for variant in ("vanilla", "dds"):
                for eps in EPS:
                    attacked = eps > 0
                    rows.append({
                        "kind": "explain", "image": image, "name": f"img{image}.png", "label": image % 2,
                        "label_known": True, "pred_clean": image % 2, "method": method,
                        "variant": variant, "eps": eps, "eps_255": round(eps * 255, 6),
                        "pred": (image % 2) ^ int(attacked and image < 2),
                        "correct": not (attacked and image < 2),
                        "pred_smoothed": None if variant == "vanilla" else (image % 2) ^ int(eps > 5 / 255 and image == 0),
                        "topk_overlap": 1.0 if not attacked else float(rng.uniform(0.3, 1.0)),
                        "spearman": 1.0 if not attacked else float(rng.uniform(0.5, 1.0)),
                    })  # fmt: skip
        rows.append({
            "kind": "certify", "image": image, "name": f"img{image}.png", "label": image % 2,
            "method": "rollout", "variant": "dds", "eps": 0.0, "label_smoothed": image % 2,
            "abstain": False, "p_lower": 0.9, "radius_beta": 0.01 * (image + 1),
            "radius_beta_linf": 0.0001, "radius_pred": 0.2, "radius_pred_correct": 0.2,
            "radius": 0.01 * (image + 1), "correct": True,
        })  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    config = EvaluationConfig(
        methods=METHODS, eps=EPS, certify=True, certify_methods=["rollout"], k=4, figure_images=2
    ).to_dict()
    torch.manual_seed(0)
    maps = {(m, v, e): torch.rand(2, 16) for m in METHODS for v in ("vanilla", "dds") for e in EPS}
    examples = {
        "pixels": torch.rand(2, 3, 16, 16),
        "maps": maps,
        "grid": [4, 4],
        "patch": [4, 4],
        "regions": {"rollout": [
            {"region": torch.arange(16) < 3, "topk": torch.arange(4), "radius_beta": 0.01, "radius": 0.01}
            for _ in range(2)
        ]},
    }  # fmt: skip
    meta = {
        "setup": {"model": "tiny-vit (VisionTransformer)", "denoiser": "unet-denoiser", "data": "shapes-3"},
        "versions": {"captum-fvit": "0.1", "torch": "2.x"},
    }
    result = aggregate_rows(_rows(), config, meta, examples)
    out = tmp_path_factory.mktemp("report")
    paths = write_report(result, out)
    return result, paths, paths["html"].read_text(encoding="utf-8")


def _section(html: str, heading: str) -> str:
    start = html.index(f">{heading}</h2>")
    end = html.find("<h2", start)
    return html[start : end if end > 0 else None]


def test_setup_names_model_denoiser_data_and_versions(report):
    _, paths, html = report
    setup = unescape(_section(html, "Setup"))
    for name, value in (("Model", "tiny-vit"), ("Denoiser", "unet-denoiser"), ("Data", "shapes-3"),
                        ("Versions", "captum-fvit 0.1")):  # fmt: skip
        assert re.search(rf"<th>{name}</th><td>[^<]*{re.escape(value)}", setup), name
    assert "3 images evaluated" in setup
    markdown = paths["markdown"].read_text()
    assert "**Denoiser**: unet-denoiser" in markdown


def test_every_metric_column_is_explained(report):
    _, _, html = report
    tables = re.findall(r"<table><thead><tr>(.*?)</tr></thead>.*?</table></div>(<dl class=\"notes\">.*?</dl>)?", html, re.S)
    assert len(tables) >= 3
    explained_somewhere = set(re.findall(r'<dt data-column="([^"]+)"', html))
    for head, _notes in tables:
        columns = re.findall(r'data-column="([^"]+)"', head)
        for column in columns:
            assert column in explained_somewhere, f"column {column} has no explanation"
    metric_head = re.findall(r'data-column="([^"]+)"', _section(html, "Explanation metrics"))
    for column in ("topk_overlap", "spearman", "accuracy", "smoothed_accuracy"):
        assert column in metric_head
        sentence = METRIC_NOTES[column]
        assert sentence.endswith(".") and sentence.count(". ") <= 1  # one sentence
        assert unescape(sentence) in unescape(html)


def test_plain_and_smoothed_accuracy_under_attack(report):
    result, _, html = report
    rows = _rows()
    # independent recomputation: images 0 and 1 fooled for eps > 0 (plain), image 0 fooled
    # by the smoothed classifier only at 8/255
    assert result.accuracy == pytest.approx({"0": 1.0, f"{4 / 255:.6g}": 1 / 3, f"{8 / 255:.6g}": 1 / 3})
    expected = {"0": 1.0, f"{4 / 255:.6g}": 1.0, f"{8 / 255:.6g}": 2 / 3}
    assert result.smoothed_accuracy == pytest.approx(expected)
    assert smoothed_accuracy_under_attack(rows) == pytest.approx(expected)
    section = _section(html, "Accuracy under attack")
    assert "plain ViT accuracy" in section and "smoothed classifier accuracy" in section
    cells = re.findall(r"<tr><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td></tr>", section)
    values = [float(c) for row in cells for c in row]
    assert values == pytest.approx([0, 1, 1, 4, 1 / 3, 1, 8, 1 / 3, 2 / 3], abs=1e-3)
    assert result.to_dict()["smoothed_accuracy_under_attack"] == result.smoothed_accuracy


def _images(html: str) -> dict[str, str]:
    return dict(re.findall(r'<img src="data:image/png;base64,[^"]+" alt="[^"]*" data-name="([^"]+)"><figcaption>([^<]*)', html))


def test_heatmaps_have_colour_bars(report):
    _, _, html = report
    shown = _images(html)
    assert {"heatmaps_raw", "heatmaps_rollout", "image_0_maps", "image_1_maps"} <= set(shown)
    maps = {"vanilla clean": torch.rand(2, 16, 16), "dds clean": torch.rand(2, 16, 16)}
    fig = figures.heatmap_grid(torch.rand(2, 3, 16, 16), maps)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "min–max" in bars[0].get_ylabel()
    fig = figures.drilldown_maps(torch.rand(3, 16, 16), {
        "raw vanilla": {"clean": torch.rand(16, 16), "ε=8/255": torch.rand(16, 16)},
        "raw dds": {"clean": torch.rand(16, 16), "ε=8/255": torch.rand(16, 16)},
    })  # fmt: skip
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 2  # one per row


def test_legends_are_outside_and_no_line_hides_another():
    """Two series with identical values (raw dds = rollout dds) both stay visible: distinct
    colours and markers, the later one thinner, and the legend outside the axes."""
    same = [1.0, 0.9, 0.8]
    fig = figures.line_plot([0, 4, 8], {"raw vanilla": [1, 0.5, 0.2], "raw dds": same,
                                        "rollout vanilla": [1, 0.6, 0.3], "rollout dds": same},
                            "ε", "V_k")  # fmt: skip
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend()
    box = legend.get_window_extent().transformed(ax.transAxes.inverted())
    assert box.x0 >= 1.0, "the legend overlaps the axes"
    lines = {line.get_label(): line for line in ax.get_lines()}
    raw, rollout = lines["raw dds"], lines["rollout dds"]
    assert raw.get_color() != rollout.get_color() and raw.get_marker() != rollout.get_marker()
    assert raw.get_linewidth() > rollout.get_linewidth() and rollout.get_zorder() > raw.get_zorder()
    assert lines["raw vanilla"].get_linestyle() == "--" and raw.get_linestyle() == "-"
    assert raw.get_markerfacecolor() == "white"  # dds hollow, vanilla filled


def test_drilldown_per_image(report):
    result, _, html = report
    section = unescape(_section(html, "Per image"))
    for image in (0, 1):
        assert f"Image {image} (img{image}.png): class {image % 2}" in section
        table = re.search(rf"<h3>Image {image}: predictions and map stability</h3>(.*?)</table>", section, re.S)
        assert table, image
        body = re.findall(r"<tr>(.*?)</tr>", table.group(1))[1:]
        assert len(body) == len(METHODS) * 2 * len(EPS)  # every method, variant and ε
        cert = re.search(rf"<h3>Image {image}: certificates</h3>(.*?)</table>", section, re.S)
        assert cert and f"{0.01 * (image + 1):.4g}" in cert.group(1)
        assert f'data-name="image_{image}_maps"' in _section(html, "Per image")
    assert "Image 2" not in section  # only the images with figure material
    # the per-image values are the rows' values
    row = next(r for r in result.records if r["image"] == 1 and r["method"] == "raw"
               and r["variant"] == "vanilla" and r["eps"] == EPS[2])  # fmt: skip
    assert f"{row['topk_overlap']:.4g}" in section


def test_contents_and_sections(report):
    _, _, html = report
    nav = re.search(r'<nav class="contents">(.*?)</nav>', html, re.S).group(1)
    for heading in ("Setup", "Accuracy under attack", "Explanation metrics", "Certificates", "Per image"):
        assert heading in nav
        assert f">{heading}</h2>" in html
    assert "<details><summary>Configuration (JSON)</summary>" in html
