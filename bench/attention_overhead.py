"""Attention-recording overhead against a bare forward pass, as ratios measured in one run.

For each model config and method: wall time of ``TokenMapExplainer`` (hooks installed,
fused attention switched off for the layers the method reads, the method's reduction) divided
by the time of a bare fused forward under ``torch.no_grad()`` — the median of ratios of
alternating pairs, so load from other jobs on a shared machine affects both sides alike.
Gradient methods are also compared with a bare forward + backward to the input, the cost
floor of any gradient method.

Swin rows (``swin_t`` at 112 px, ``swin_t224`` at 224 px) include assembling each block's
window attention into the stage's full token×token matrix.

Run:  python bench/attention_overhead.py [--configs tiny base swin_t] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import timm
import torch

from captum_fvit.explain import METHODS, TokenMapExplainer

CONFIGS = {
    # name: (timm name, kwargs, image size)
    "tiny": ("vit_tiny_patch16_224", {"img_size": 64, "patch_size": 8}, 64),
    "base": ("vit_base_patch16_224", {}, 224),
    # Swin-T: window attention assembled into full stage matrices (stage 1 has (H/4)·(W/4)
    # tokens, so the T×T products grow as (H·W)²; 112 px keeps a CPU run short).
    "swin_t": ("swin_tiny_patch4_window7_224", {"img_size": 112}, 112),
    "swin_t224": ("swin_tiny_patch4_window7_224", {}, 224),
}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _paired_ratio(fn, reference, repeats: int) -> tuple[float, float]:
    """Median time of ``fn`` and the median of its per-pair ratio to ``reference``, the two
    run alternately so that a machine shared with other jobs slows both alike."""
    fn()  # warm-up
    reference()
    times, ratios = [], []
    for _ in range(repeats):
        t_ref = _seconds(reference)
        t = _seconds(fn)
        times.append(t)
        ratios.append(t / t_ref)
    return statistics.median(times), statistics.median(ratios)


def run(configs: list[str], batch: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for config in configs:
        name, kwargs, size = CONFIGS[config]
        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()
        x = torch.randn(batch, 3, size, size)

        def bare():
            with torch.no_grad():
                model(x)

        def bare_backward():
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(model(xi)[:, 0].sum(), xi)

        for method in sorted(METHODS):
            explainer = TokenMapExplainer(model, method)
            t, ratio = _paired_ratio(lambda: explainer(x), bare, repeats)
            ratio_backward = None
            if explainer.method.needs_gradients:
                _, ratio_backward = _paired_ratio(lambda: explainer(x), bare_backward, repeats)
            rows.append(
                {
                    "config": config,
                    "batch": batch,
                    "method": method,
                    "ms_per_image": 1e3 * t / batch,
                    "ratio_vs_bare_forward": ratio,
                    "ratio_vs_forward_backward": ratio_backward,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["tiny", "base", "swin_t"], choices=list(CONFIGS)
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = run(args.configs, args.batch, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(f"{'config':<10}{'method':<14}{'ms/image':>10}{'× bare fwd':>12}{'× fwd+bwd':>11}")
    for r in rows:
        fb = r["ratio_vs_forward_backward"]
        print(
            f"{r['config']:<10}{r['method']:<14}{r['ms_per_image']:>10.2f}"
            f"{r['ratio_vs_bare_forward']:>12.2f}{(f'{fb:.2f}' if fb else '-'):>11}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
