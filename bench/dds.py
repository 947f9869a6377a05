"""DDSAttention throughput against a naive per-sample loop, as ratios measured in one run.

The naive loop is how the paper's published code runs: batch 1, fp32, one noise sample at a
time (noise → denoiser → ViT with attention → map). ``DDSAttention`` runs the same work in
chunks through the ensemble engine. Both use the same models and σ.

Configs
-------
``small`` (CPU or GPU): a 4-layer ViT on 32×32 inputs and a 0.7 M-parameter diffusers UNet.
``adm256`` (GPU only): the ADM 256×256 uncond architecture (552.8 M parameters, random
weights) converted to a diffusers ``UNet2DModel`` + timm ``vit_base_patch16_224`` at 224
(random weights), beside the FLOP floor: FLOPs counted with ``torch.utils.flop_counter``
divided by a measured bf16 matmul peak.

Run:  python bench/dds.py [--config small|adm256] [--samples 32 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import timm
import torch
from diffusers import DDPMScheduler, UNet2DModel

from captum_fvit import AttentionMap, DDSAttention, DiffusionDenoiser
from captum_fvit.noise import draw_noise
from captum_fvit.space import resolve_normalization


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(config: str, device: torch.device):
    torch.manual_seed(0)
    if config == "small":
        vit = timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=10
        )
        unet = UNet2DModel(
            sample_size=32,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
        scheduler = DDPMScheduler(num_train_timesteps=1000)
        size = 32
    elif config == "adm256":
        from captum_fvit.denoise import ADM_256_UNCOND, adm_scheduler_kwargs, adm_unet_kwargs

        vit = timm.create_model("vit_base_patch16_224", num_classes=1000)
        unet = UNet2DModel(**adm_unet_kwargs(ADM_256_UNCOND))
        scheduler = DDPMScheduler(**adm_scheduler_kwargs(ADM_256_UNCOND))
        size = 224
    else:
        raise ValueError(f"unknown config {config!r}")
    vit = vit.eval().to(device)
    unet = unet.eval().to(device)
    # ADM runs natively at 224 (= 7·32): no resizing of the noise.
    denoiser = DiffusionDenoiser(unet, scheduler, resize="never" if config == "adm256" else "auto")
    return vit, denoiser, size


def naive_loop(vit, denoiser, x, sigma, n, method, seed) -> torch.Tensor:
    """Batch 1, fp32, one sample at a time (the published code's way)."""
    norm = resolve_normalization(vit)
    explainer = AttentionMap(vit, method)
    pixels = norm.to_pixels(x)
    total = 0
    for s in range(n):
        noise = draw_noise(seed, s, s + 1, tuple(x.shape[1:]), sigma, device=x.device)
        denoised = denoiser(pixels + noise, sigma)
        total = total + explainer.token_map(norm.from_pixels(denoised))
    return total / n


def flop_floor_ms(vit, denoiser, size: int, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        denoiser(x, 0.25)
        vit(x)
    flops = counter.get_total_flops()
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    _sync(device)
    start = time.perf_counter()
    for _ in range(20):
        a @ a
    _sync(device)
    peak = 20 * 2 * 8192**3 / (time.perf_counter() - start)
    return 1e3 * flops / peak


def _median_time(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(
    config: str, samples: list[int], methods: list[str], batch: int, repeats: int = 3, seed: int = 0
):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vit, denoiser, size = build(config, device)
    x = torch.randn(1, 3, size, size, device=device)
    rows = []
    floor = flop_floor_ms(vit, denoiser, size, device)
    for method in methods:
        for n in samples:
            dds = DDSAttention(vit, denoiser, method, sigma=0.25, n_samples=n, batch_size=batch)
            dds.token_map(x, seed=seed, target=0)  # warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t_dds = _median_time(lambda: dds.token_map(x, seed=seed, target=0), device, repeats)
            peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
            n_naive = min(n, 32)
            naive_loop(vit, denoiser, x, 0.25, 2, method, seed)  # warm-up
            t_naive = _median_time(
                lambda: naive_loop(vit, denoiser, x, 0.25, n_naive, method, seed), device, repeats
            )
            ms_dds = 1e3 * t_dds / n
            ms_naive = 1e3 * t_naive / n_naive
            rows.append(
                {
                    "config": config,
                    "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "method": method,
                    "n_samples": n,
                    "batch_size": batch,
                    "ms_per_sample_dds": ms_dds,
                    "ms_per_sample_naive": ms_naive,
                    "speedup_vs_naive": ms_naive / ms_dds,
                    "flop_floor_ms_per_sample": floor,
                    "ratio_to_floor": ms_dds / floor if floor else None,
                    "peak_gpu_mib": peak,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=["small", "adm256"])
    parser.add_argument("--samples", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--methods", nargs="+", default=["rollout", "grad_rollout"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = run(args.config, args.samples, args.methods, args.batch_size, args.repeats)
    print(f"torch {torch.__version__}, device {rows[0]['device']}, {torch.get_num_threads()} threads")
    print(
        f"{'method':<13}{'n':>6}{'ms/sample DDS':>15}{'ms/sample naive':>17}{'speedup':>9}"
        f"{'× floor':>9}{'peak MiB':>10}"
    )
    for r in rows:
        floor = f"{r['ratio_to_floor']:.2f}" if r["ratio_to_floor"] else "-"
        peak = f"{r['peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] else "-"
        print(
            f"{r['method']:<13}{r['n_samples']:>6}{r['ms_per_sample_dds']:>15.2f}"
            f"{r['ms_per_sample_naive']:>17.2f}{r['speedup_vs_naive']:>9.2f}{floor:>9}{peak:>10}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
