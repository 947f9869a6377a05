"""Load OpenAI guided-diffusion (ADM) checkpoints as diffusers ``UNet2DModel``.

The DDS paper denoises with OpenAI's ``256x256_diffusion_uncond.pt``
(Dhariwal & Nichol, 2021), which diffusers cannot load. This module builds a
``UNet2DModel`` whose architecture is identical to ADM's ``UNetModel`` and
maps every checkpoint tensor onto it.

Architecture correspondence (ADM -> diffusers)
----------------------------------------------
* ``time_embed.{0,2}`` -> ``time_embedding.linear_{1,2}``; ADM's sinusoidal
  embedding ``[cos | sin]`` with frequencies ``exp(-ln(1e4) i / half)`` equals
  diffusers' ``Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)``.
* ``input_blocks.0`` -> ``conv_in``; per level the ResBlocks (+ attention when
  the downsample rate is in ``attention_ds``) -> ``down_blocks[l].resnets`` /
  ``.attentions``; the level's down ResBlock (``resblock_updown``) or strided
  conv -> ``down_blocks[l].downsamplers[0]``.
* ``middle_block.{0,1,2}`` -> ``mid_block.resnets[0]``, ``.attentions[0]``,
  ``.resnets[1]``. ADM's middle attention has a GroupNorm; diffusers only
  creates it for ``resnet_time_scale_shift="scale_shift"`` when
  ``attn_norm_num_groups`` is set, hence ``attn_norm_num_groups=32``.
* ``output_blocks`` -> ``up_blocks`` (``num_res_blocks + 1`` ResBlocks per
  level, attention where ADM has it, up ResBlock/conv -> ``upsamplers[0]``).
* ``out.{0,2}`` -> ``conv_norm_out``, ``conv_out``; ``label_emb`` ->
  ``class_embedding``.
* ResBlock: ``in_layers.{0,2}`` -> ``norm1``, ``conv1``; ``emb_layers.1`` ->
  ``time_emb_proj``; ``out_layers.{0,3}`` -> ``norm2``, ``conv2``;
  ``skip_connection`` -> ``conv_shortcut``. ADM's FiLM
  ``norm(h) * (1 + scale) + shift`` is diffusers' ``"scale_shift"``.
* Attention: ``norm`` -> ``group_norm``; the 1x1 ``qkv`` conv is split into
  ``to_q``/``to_k``/``to_v``; ``proj_out`` -> ``to_out.0``. The legacy order
  (``use_new_attention_order=False``) stores ``[q_h | k_h | v_h]`` per head
  ``h``; the new order stores ``[q | k | v]`` with heads inside each.
  ADM scales q and k by ``ch ** -0.25`` each, i.e. the usual ``ch ** -0.5``.

Not expressible exactly in ``UNet2DModel`` (rejected with an error):
``channel_mult[0] != 1`` (the 512x512 model: ADM's sinusoidal embedding has
``model_channels`` features, diffusers' has ``block_out_channels[0]``),
``conv_resample=False`` without ``resblock_updown``, and ``num_heads``-based
attention whose head width differs between levels.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, NamedTuple

import torch
from torch import Tensor

from ..weight_files import check_state_dict, load_torch_checkpoint

__all__ = [
    "ADM_256_UNCOND",
    "ADMConfig",
    "GuidedDiffusionModel",
    "adm_scheduler_kwargs",
    "adm_unet_kwargs",
    "convert_adm_state_dict",
    "load_guided_diffusion",
]

_ADM_URL = "https://github.com/openai/guided-diffusion"
_GROUPS = 32  # ADM's normalization() is always GroupNorm(32, C, eps=1e-5)
_EPS = 1e-5


@dataclass(frozen=True)
class ADMConfig:
    """Hyper-parameters of a guided-diffusion ``UNetModel`` and its schedule.

    Field names follow ``guided_diffusion.unet.UNetModel``.

    Parameters
    ----------
    image_size : int
        Training resolution (pixels); becomes ``sample_size``.
    in_channels : int
        Image channels.
    model_channels : int
        Base width (``num_channels`` flag).
    out_channels : int
        ``in_channels`` (fixed variance) or ``2 * in_channels``
        (``learn_sigma=True``: epsilon and variance interpolation).
    num_res_blocks : int
        ResBlocks per level on the way down.
    attention_ds : tuple of int
        **Downsample rates** (1, 2, 4, ...) with attention, i.e. the
        ``attention_resolutions`` argument of ``UNetModel``; the command-line
        flag ``--attention_resolutions 32,16,8`` of a 256 model means
        ``image_size // 32, ...`` = (8, 16, 32). See :meth:`from_flags`.
    channel_mult : tuple of int
        Width multiplier per level.
    num_heads, num_head_channels, num_heads_upsample : int
        Attention heads as in ADM (``num_head_channels != -1`` wins).
    use_scale_shift_norm, resblock_updown, use_new_attention_order : bool
        As in ADM.
    conv_resample : bool
        Learned up/down-sampling convolutions (only used without
        ``resblock_updown``).
    num_classes : int or None
        Number of classes of a class-conditional model.
    dropout : float
        Dropout probability (inference ignores it).
    diffusion_steps : int
        Training timesteps ``T``.
    noise_schedule : {"linear", "cosine"}
        ADM's beta schedule.
    """

    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6
    num_res_blocks: int = 2
    attention_ds: tuple[int, ...] = (8, 16, 32)
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False
    conv_resample: bool = True
    num_classes: int | None = None
    dropout: float = 0.0
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"

    @property
    def learn_sigma(self) -> bool:
        """True when the model also outputs variance channels."""
        return self.out_channels == 2 * self.in_channels

    @classmethod
    def from_flags(
        cls,
        *,
        image_size: int,
        num_channels: int,
        num_res_blocks: int,
        attention_resolutions: str | tuple[int, ...] = "16,8",
        channel_mult: str | tuple[int, ...] = "",
        learn_sigma: bool = False,
        class_cond: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        **kwargs: Any,
    ) -> "ADMConfig":
        """Build a config from guided-diffusion's command-line flags.

        ``attention_resolutions`` are **resolutions** in pixels (as in the
        OpenAI README), converted to downsample rates ``image_size // r``;
        an empty ``channel_mult`` picks ADM's default for ``image_size``.
        Other keyword arguments are :class:`ADMConfig` fields.
        """
        if isinstance(attention_resolutions, str):
            resolutions = tuple(int(r) for r in attention_resolutions.split(",") if r.strip())
        else:
            resolutions = tuple(int(r) for r in attention_resolutions)
        if channel_mult in ("", ()):
            defaults = {
                512: (0.5, 1, 1, 2, 2, 4, 4),
                256: (1, 1, 2, 2, 4, 4),
                128: (1, 1, 2, 3, 4),
                64: (1, 2, 3, 4),
            }
            if image_size not in defaults:
                raise ValueError(f"no default channel_mult for image_size={image_size}; pass channel_mult.")
            mult = defaults[image_size]
        elif isinstance(channel_mult, str):
            mult = tuple(int(m) for m in channel_mult.split(","))
        else:
            mult = tuple(channel_mult)
        return cls(
            image_size=image_size,
            in_channels=in_channels,
            model_channels=num_channels,
            out_channels=in_channels * (2 if learn_sigma else 1),
            num_res_blocks=num_res_blocks,
            attention_ds=tuple(image_size // r for r in resolutions),
            channel_mult=mult,  # type: ignore[arg-type]
            num_classes=num_classes if class_cond else None,
            **kwargs,
        )


#: OpenAI's ``256x256_diffusion_uncond.pt`` (the DDS paper's denoiser):
#: 552,814,086 parameters, learned sigma, linear 1000-step schedule.
ADM_256_UNCOND = ADMConfig()


class GuidedDiffusionModel(NamedTuple):
    """Result of :func:`load_guided_diffusion`; unpacks as ``unet, scheduler``."""

    unet: Any  # diffusers.UNet2DModel
    scheduler: Any  # diffusers.DDPMScheduler


# ---------------------------------------------------------------- structure
def _level_widths(cfg: ADMConfig) -> list[int]:
    return [int(m * cfg.model_channels) for m in cfg.channel_mult]


def _head_dim(cfg: ADMConfig) -> int:
    """The single attention head width diffusers needs (or raise)."""
    if cfg.num_head_channels != -1:
        return cfg.num_head_channels
    heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
    widths = _level_widths(cfg)
    dims = set()
    for level, width in enumerate(widths):
        if 2**level in cfg.attention_ds:
            dims.add((width // cfg.num_heads, width % cfg.num_heads))
            dims.add((width // heads_up, width % heads_up))
    dims.add((widths[-1] // cfg.num_heads, widths[-1] % cfg.num_heads))  # middle block
    if len(dims) != 1 or next(iter(dims))[1] != 0:
        raise NotImplementedError(
            "diffusers' UNet2DModel uses one attention head width everywhere, but this ADM "
            f"config (num_heads={cfg.num_heads}, num_heads_upsample={cfg.num_heads_upsample}) "
            "gives different head widths per level; only num_head_channels-based configs "
            "or equal widths are supported."
        )
    return next(iter(dims))[0]


def _check_supported(cfg: ADMConfig) -> None:
    if any(float(m) != int(m) for m in cfg.channel_mult) or int(cfg.channel_mult[0]) != 1:
        raise NotImplementedError(
            f"channel_mult={cfg.channel_mult}: diffusers' UNet2DModel ties the sinusoidal time "
            "embedding width to block_out_channels[0], ADM to model_channels, so only integer "
            "channel_mult starting with 1 converts exactly (the 512x512 model does not)."
        )
    if not cfg.resblock_updown and not cfg.conv_resample:
        raise NotImplementedError(
            "conv_resample=False without resblock_updown (parameter-free up/down-sampling) "
            "has no UNet2DModel block type; use a config with resblock_updown or conv_resample."
        )
    if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
        raise ValueError(
            f"out_channels={cfg.out_channels} must be in_channels ({cfg.in_channels}) or "
            "2*in_channels (learn_sigma=True)."
        )
    if cfg.noise_schedule not in ("linear", "cosine"):
        raise ValueError(f"noise_schedule must be 'linear' or 'cosine', got {cfg.noise_schedule!r}.")


def adm_unet_kwargs(cfg: ADMConfig) -> dict[str, Any]:
    """``UNet2DModel`` constructor arguments reproducing ADM's ``UNetModel``.

    Parameters
    ----------
    cfg : ADMConfig

    Returns
    -------
    dict
        Pass as ``diffusers.UNet2DModel(**kwargs)``.
    """
    _check_supported(cfg)
    n_levels = len(cfg.channel_mult)
    attn = [2**level in cfg.attention_ds for level in range(n_levels)]
    plain_down = "ResnetDownsampleBlock2D" if cfg.resblock_updown else "DownBlock2D"
    plain_up = "ResnetUpsampleBlock2D" if cfg.resblock_updown else "UpBlock2D"
    return dict(
        sample_size=cfg.image_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        center_input_sample=False,
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=tuple("AttnDownBlock2D" if a else plain_down for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else plain_up for a in reversed(attn)),
        mid_block_type="UNetMidBlock2D",
        block_out_channels=tuple(_level_widths(cfg)),
        layers_per_block=cfg.num_res_blocks,
        mid_block_scale_factor=1,
        downsample_padding=1,
        downsample_type="resnet" if cfg.resblock_updown else "conv",
        upsample_type="resnet" if cfg.resblock_updown else "conv",
        dropout=cfg.dropout,
        act_fn="silu",
        attention_head_dim=_head_dim(cfg),
        norm_num_groups=_GROUPS,
        attn_norm_num_groups=_GROUPS,
        norm_eps=_EPS,
        resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
        add_attention=True,
        class_embed_type=None,
        num_class_embeds=cfg.num_classes,
    )


def adm_scheduler_kwargs(cfg: ADMConfig) -> dict[str, Any]:
    """``DDPMScheduler`` arguments for ADM's training noise schedule.

    ADM's linear schedule is ``linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)``
    (computed in float64 by ADM, float32 by diffusers); its cosine schedule is
    diffusers' ``"squaredcos_cap_v2"``. ADM predicts epsilon; a learned sigma
    is diffusers' ``variance_type="learned_range"``.
    """
    kwargs: dict[str, Any] = dict(
        num_train_timesteps=cfg.diffusion_steps,
        prediction_type="epsilon",
        variance_type="learned_range" if cfg.learn_sigma else "fixed_small",
        clip_sample=True,
    )
    if cfg.noise_schedule == "linear":
        scale = 1000.0 / cfg.diffusion_steps
        kwargs.update(beta_schedule="linear", beta_start=scale * 1e-4, beta_end=scale * 0.02)
    else:
        kwargs.update(beta_schedule="squaredcos_cap_v2")
    return kwargs


def _key_plan(cfg: ADMConfig) -> Iterator[tuple[str, str, str]]:
    """Yield ``(adm_prefix, diffusers_prefix, kind)`` for every ADM module."""
    yield "time_embed.0", "time_embedding.linear_1", "plain"
    yield "time_embed.2", "time_embedding.linear_2", "plain"
    if cfg.num_classes is not None:
        yield "label_emb", "class_embedding", "embedding"
    yield "input_blocks.0.0", "conv_in", "plain"
    updown = "resblock" if cfg.resblock_updown else "resample"
    n_levels = len(cfg.channel_mult)
    index = 1
    for level in range(n_levels):
        has_attn = 2**level in cfg.attention_ds
        for j in range(cfg.num_res_blocks):
            yield f"input_blocks.{index}.0", f"down_blocks.{level}.resnets.{j}", "resblock"
            if has_attn:
                yield f"input_blocks.{index}.1", f"down_blocks.{level}.attentions.{j}", "attention"
            index += 1
        if level != n_levels - 1:
            sub = "" if cfg.resblock_updown else ".op"
            yield f"input_blocks.{index}.0{sub}", f"down_blocks.{level}.downsamplers.0" + (
                "" if cfg.resblock_updown else ".conv"
            ), updown
            index += 1
    yield "middle_block.0", "mid_block.resnets.0", "resblock"
    yield "middle_block.1", "mid_block.attentions.0", "attention"
    yield "middle_block.2", "mid_block.resnets.1", "resblock"
    index = 0
    for k, level in enumerate(reversed(range(n_levels))):
        has_attn = 2**level in cfg.attention_ds
        for i in range(cfg.num_res_blocks + 1):
            yield f"output_blocks.{index}.0", f"up_blocks.{k}.resnets.{i}", "resblock"
            sub = 1
            if has_attn:
                yield f"output_blocks.{index}.1", f"up_blocks.{k}.attentions.{i}", "attention"
                sub = 2
            if level and i == cfg.num_res_blocks:
                src = f"output_blocks.{index}.{sub}" + ("" if cfg.resblock_updown else ".conv")
                dst = f"up_blocks.{k}.upsamplers.0" + ("" if cfg.resblock_updown else ".conv")
                yield src, dst, updown
            index += 1
    yield "out.0", "conv_norm_out", "plain"
    yield "out.2", "conv_out", "plain"


_RESBLOCK_PARTS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


def _split_qkv(weight: Tensor, heads: int, legacy: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Split ADM's fused qkv (``3C x ...``) into diffusers' q, k, v (``C x ...``)."""
    rest = weight.shape[1:]
    channels = weight.shape[0] // 3
    if legacy:  # per head: [q_h | k_h | v_h]
        parts = weight.reshape(heads, 3, channels // heads, *rest)
        q, k, v = (parts[:, i].reshape(channels, *rest) for i in range(3))
    else:  # [q | k | v], heads inside each
        q, k, v = weight.reshape(3, channels, *rest).unbind(0)
    return q.contiguous(), k.contiguous(), v.contiguous()


def convert_adm_state_dict(
    state_dict: Mapping[str, Tensor],
    config: ADMConfig = ADM_256_UNCOND,
) -> dict[str, Tensor]:
    """Convert an ADM ``UNetModel`` state dict to ``UNet2DModel`` keys.

    Works on any device, including ``meta``.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        ADM checkpoint (e.g. ``torch.load("256x256_diffusion_uncond.pt")``).
    config : ADMConfig
        The architecture the checkpoint was trained with.

    Returns
    -------
    dict of str to torch.Tensor
        State dict for ``UNet2DModel(**adm_unet_kwargs(config))``.

    Raises
    ------
    KeyError
        If the checkpoint lacks a tensor the config implies, or holds tensors
        the conversion does not account for (wrong config or checkpoint).
    """
    _check_supported(config)
    head_dim = _head_dim(config)
    sd = dict(state_dict)
    used: set[str] = set()
    out: dict[str, Tensor] = {}
    missing: list[str] = []

    def take(key: str, required: bool = True) -> Tensor | None:
        if key not in sd:
            if required:
                missing.append(key)
            return None
        used.add(key)
        return sd[key]

    for src, dst, kind in _key_plan(config):
        if kind in ("plain", "resample", "embedding"):
            for name in ("weight",) if kind == "embedding" else ("weight", "bias"):
                tensor = take(f"{src}.{name}")
                if tensor is not None:
                    out[f"{dst}.{name}"] = tensor
        elif kind == "resblock":
            for part, new in _RESBLOCK_PARTS.items():
                optional = part == "skip_connection"
                for name in ("weight", "bias"):
                    tensor = take(f"{src}.{part}.{name}", required=not optional)
                    if tensor is not None:
                        out[f"{dst}.{new}.{name}"] = tensor
        elif kind == "attention":
            for name in ("weight", "bias"):
                tensor = take(f"{src}.norm.{name}")
                if tensor is not None:
                    out[f"{dst}.group_norm.{name}"] = tensor
            weight, bias = take(f"{src}.qkv.weight"), take(f"{src}.qkv.bias")
            if weight is not None and bias is not None:
                channels = weight.shape[0] // 3
                heads = channels // head_dim
                legacy = not config.use_new_attention_order
                for proj, w in zip(("to_q", "to_k", "to_v"), _split_qkv(weight.reshape(3 * channels, -1), heads, legacy)):
                    out[f"{dst}.{proj}.weight"] = w
                for proj, b in zip(("to_q", "to_k", "to_v"), _split_qkv(bias, heads, legacy)):
                    out[f"{dst}.{proj}.bias"] = b
            weight, bias = take(f"{src}.proj_out.weight"), take(f"{src}.proj_out.bias")
            if weight is not None and bias is not None:
                out[f"{dst}.to_out.0.weight"] = weight.reshape(weight.shape[0], -1)
                out[f"{dst}.to_out.0.bias"] = bias
        else:  # pragma: no cover - _key_plan only yields the kinds above
            raise AssertionError(kind)

    unused = sorted(set(sd) - used)
    if missing or unused:
        raise KeyError(
            "ADM checkpoint does not match the config "
            f"(missing {len(missing)}: {missing[:8]}; unconverted {len(unused)}: {unused[:8]}). "
            "Check image_size, model_channels, channel_mult, num_res_blocks, attention_ds, "
            "learn_sigma/out_channels, resblock_updown and num_classes against the flags the "
            "checkpoint was trained with."
        )
    return out


def _load_checkpoint(path_or_state_dict: str | os.PathLike | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(path_or_state_dict, Mapping):
        check_state_dict(path_or_state_dict, "the state dict passed to load_guided_diffusion")
        return path_or_state_dict
    if not isinstance(path_or_state_dict, (str, os.PathLike)):
        raise TypeError(
            "load_guided_diffusion needs the path of an OpenAI guided-diffusion .pt file or its "
            f"state dict, got {type(path_or_state_dict).__name__}"
        )
    path = os.fspath(path_or_state_dict)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"ADM checkpoint {path!r} not found; download e.g. 256x256_diffusion_uncond.pt from "
            f"{_ADM_URL} and pass its local path."
        )
    name = os.path.basename(path.rstrip("/\\")) or "the checkpoint"
    fix = (
        f"download {name} again (OpenAI's guided-diffusion checkpoints, e.g. "
        f"256x256_diffusion_uncond.pt, are linked from {_ADM_URL}) and pass its local path"
    )
    return load_torch_checkpoint(path_or_state_dict, fix)


def load_guided_diffusion(
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
    config: ADMConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> GuidedDiffusionModel:
    """Build a diffusers ``UNet2DModel`` + ``DDPMScheduler`` from an ADM checkpoint.

    Parameters
    ----------
    path_or_state_dict : path or mapping
        Path to an OpenAI guided-diffusion ``.pt`` file, or its state dict.
    config : ADMConfig, optional
        Architecture; defaults to :data:`ADM_256_UNCOND`
        (``256x256_diffusion_uncond.pt``).
    dtype : torch.dtype, default torch.float32
        dtype of the returned UNet.
    device : str or torch.device, default "cpu"
        Device of the returned UNet (``"meta"`` works for shape checks).
    **overrides
        :class:`ADMConfig` fields replacing those of ``config`` (e.g.
        ``image_size=64, model_channels=128``).

    Returns
    -------
    GuidedDiffusionModel
        ``(unet, scheduler)``; ``unet`` is in eval mode. Use as
        ``DiffusionDenoiser(*load_guided_diffusion(path))``.

    Raises
    ------
    FileNotFoundError
        If the path does not exist (the message says where to download the checkpoint).
    ValueError
        If the file is empty, truncated, not a PyTorch checkpoint or holds pickled Python
        objects (each message names the file and says to download it again), or if a
        tensor's shape differs from the architecture's.
    TypeError
        If the file or mapping is not a state dict of tensors.
    KeyError
        If any checkpoint tensor is unaccounted for or missing.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    cfg = dataclasses.replace(config or ADM_256_UNCOND, **overrides)
    converted = convert_adm_state_dict(_load_checkpoint(path_or_state_dict), cfg)
    with torch.device("meta"):
        unet = UNet2DModel(**adm_unet_kwargs(cfg))
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in converted and tuple(converted[k].shape) != tuple(v.shape)
    ]
    if missing or extra or wrong:
        raise ValueError(
            "converted ADM weights do not fit the diffusers architecture "
            f"(missing {missing[:8]}, unexpected {extra[:8]}, shape mismatches {wrong[:8]}); "
            "the config does not describe this checkpoint."
        )
    target = torch.device(device)
    # copy tensors of a caller's state dict so the two models never share storage
    copy = isinstance(path_or_state_dict, Mapping)
    converted = {k: v.to(device=target, dtype=dtype, copy=copy) for k, v in converted.items()}
    unet.load_state_dict(converted, strict=True, assign=True)
    unet.eval()
    scheduler = DDPMScheduler(**adm_scheduler_kwargs(cfg))
    return GuidedDiffusionModel(unet, scheduler)
