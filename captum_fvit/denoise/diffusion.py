"""One-shot diffusion denoising (Carlini et al., ICLR 2023) for DDS.

Given ``x_noisy = x + delta`` with ``delta ~ N(0, sigma**2 I)`` in [0, 1]
pixel units, :class:`DiffusionDenoiser`

1. picks ``t* = min { t : sqrt((1 - abar_t) / abar_t) >= 2 sigma }``
   (:func:`~captum_fvit.denoise.schedule.timestep_for_sigma`);
2. forms ``x_t = sqrt(abar_{t*}) * (2 x_noisy - 1)``, which is a valid
   diffusion sample at (approximately) timestep ``t*``: its noise std is
   ``2 sigma sqrt(abar_{t*}) <= sqrt(1 - abar_{t*})``;
3. optionally (``exact_noise_match=True``) adds
   ``sqrt((1 - abar_{t*}) - 4 sigma**2 abar_{t*}) * xi`` with
   ``xi ~ N(0, I)`` drawn from ``generator``, so the noise std in ``x_t`` is
   exactly the model's ``sqrt(1 - abar_{t*})``;
4. runs the UNet once at ``t*`` and converts its output to a clean-image
   estimate ``x0_hat`` in [-1, 1] ("epsilon", "v_prediction" or "sample"
   parameterisation; learned-variance models output ``2C`` channels, of
   which the first ``C`` are used);
5. clips ``x0_hat`` to [-1, 1] (``clip=True``) and returns ``(x0_hat + 1) / 2``
   in [0, 1] pixel units.
"""

from __future__ import annotations

import contextlib
import math
import posixpath
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import randn_like, validate_denoiser_inputs
from .schedule import max_sigma, noise_to_signal, timestep_for_sigma

__all__ = ["DiffusionDenoiser"]

_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_INTERPOLATIONS = ("bilinear", "bicubic")


def _config_get(obj: Any, name: str, default: Any = None) -> Any:
    config = getattr(obj, "config", None)
    if config is None:
        return getattr(obj, name, default)
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def _module_dtype_device(module: Any) -> tuple[torch.dtype, torch.device]:
    dtype = getattr(module, "dtype", None)
    device = getattr(module, "device", None)
    if (dtype is None or device is None) and hasattr(module, "parameters"):
        first = next(iter(module.parameters()), None)
        if first is not None:
            dtype = dtype or first.dtype
            device = device or first.device
    return (dtype or torch.float32), torch.device(device or "cpu")


def _unwrap_sample(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "sample"):
        return output.sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(
        "the UNet must return a tensor, a tuple whose first item is a tensor, or an "
        f"object with a .sample tensor (like diffusers' UNet2DOutput); got {type(output).__name__}."
    )


class DiffusionDenoiser:
    """Denoise pixel-space Gaussian noise with a pretrained diffusion UNet.

    Parameters
    ----------
    unet : diffusers.UNet2DModel or compatible module
        Unconditional image diffusion model called as ``unet(x_t, timesteps)``
        with ``x_t`` in [-1, 1] units and ``timesteps`` a long tensor of shape
        ``(N,)``; it returns a tensor, a tuple, or an object with ``.sample``.
        Needed attributes: ``config.in_channels``, ``config.out_channels``
        (``C`` or ``2C`` for learned variance) and ``config.sample_size``
        (``None`` = any size); ``dtype``/``device`` are read if present.
        The module is switched to eval mode.
    scheduler : diffusers.DDPMScheduler, DDIMScheduler or compatible
        Provides ``alphas_cumprod`` (the training schedule, ``abar_t`` for
        ``t = 0 .. T-1``) and ``config.prediction_type`` (``"epsilon"``,
        ``"v_prediction"`` or ``"sample"``). Its inference timesteps are not
        used.
    num_steps : int, default 1
        Number of UNet evaluations. ``1`` is the one-shot denoiser of the
        paper. ``k > 1`` runs DDIM steps (Song et al., 2021) over the timesteps
        ``round(linspace(t*, 0, k))`` (duplicates removed, so at most
        ``t* + 1`` evaluations): at each ``t`` the UNet gives ``x0_hat`` (clipped
        if ``clip``) and ``eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)``;
        the next sample is
        ``sqrt(abar_s) x0_hat + sqrt(1 - abar_s - s_t**2) eps_hat + s_t z`` with
        ``s_t = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)``
        and ``z ~ N(0, I)`` from ``generator``; the ``x0_hat`` of the last
        evaluation (at ``t = 0``) is returned.
    eta : float, default 0.0
        DDIM stochasticity for ``num_steps > 1``: 0 is deterministic DDIM,
        1 is DDPM-like ancestral sampling on the sub-sequence. No effect when
        ``num_steps == 1``.
    exact_noise_match : bool, default False
        Add independent Gaussian noise (from ``generator``) so that the noise
        in ``x_t`` has exactly the std ``sqrt(1 - abar_{t*})`` the UNet was
        trained for, instead of the slightly smaller
        ``2 sigma sqrt(abar_{t*})``.
    clip : bool, default True
        Clip ``x0_hat`` to [-1, 1] (so the output lies in [0, 1] pixel
        units). Also clamps the final output to [0, 1] after resizing.
    resize : {"auto", "never"}, default "auto"
        ``"auto"``: when the input's H x W differs from the UNet's
        ``config.sample_size``, resize the noisy image to ``sample_size``
        before denoising and the result back to H x W afterwards
        (``interpolation`` with ``antialias=True``, ``align_corners=False``).
        ``"never"``: run the UNet at the input size (it must be divisible by
        the UNet's total downsampling factor).
    interpolation : {"bilinear", "bicubic"}, default "bilinear"
        Resampling kernel for ``resize="auto"``.
    channels_last : bool, default False
        Convert the UNet (in place) and its inputs to the channels-last memory format,
        which cuDNN convolutions run faster in on recent GPUs (bf16/fp16).
    compile : bool or dict, default False
        Run the UNet through ``torch.compile`` (a dict is passed as its keyword arguments,
        e.g. ``{"mode": "max-autotune"}``). The first calls compile (slow); later calls with
        the same shapes reuse it. The UNet module itself is not replaced.
    differentiable : bool, default False
        If False the UNet runs under ``torch.no_grad()``. If True the caller's
        grad mode is respected, so gradients can flow through the denoiser.

    Notes
    -----
    **Units.** ``sigma`` and all inputs/outputs are in [0, 1] pixel units;
    internally the UNet works in [-1, 1] units where pixel noise ``sigma`` has
    std ``2 sigma``.

    **Resizing and noise.** Resizing a noisy image is a linear filter: the
    resized noise is no longer white (upsampling lowers its per-pixel std and
    correlates neighbouring pixels). ``t*`` is still chosen from the nominal
    ``sigma``; feeding images at the UNet's native ``sample_size`` avoids this
    mismatch.

    **Batching.** The whole batch goes through the UNet in one call; the
    caller chooses the chunk size.
    """

    #: Draws its randomness through ``randn_like`` (per-sample addressable noise).
    accepts_sample_noise = True

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        *,
        num_steps: int = 1,
        eta: float = 0.0,
        exact_noise_match: bool = False,
        clip: bool = True,
        resize: Literal["auto", "never"] = "auto",
        interpolation: Literal["bilinear", "bicubic"] = "bilinear",
        differentiable: bool = False,
        channels_last: bool = False,
        compile: bool | dict = False,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1 (1 = one-shot denoising), got {num_steps!r}.")
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite float >= 0 (0 = deterministic DDIM), got {eta!r}.")
        if resize not in ("auto", "never"):
            raise ValueError(f"resize must be 'auto' or 'never', got {resize!r}.")
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}.")

        alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None:
            raise TypeError(
                "scheduler must expose alphas_cumprod (e.g. diffusers.DDPMScheduler or "
                f"DDIMScheduler); got {type(scheduler).__name__}."
            )
        self._abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)
        noise_to_signal(self._abar)  # validates the schedule
        prediction_type = _config_get(scheduler, "prediction_type", "epsilon")
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(
                f"unsupported prediction_type {prediction_type!r}; the scheduler config must say "
                f"one of {_PREDICTION_TYPES}."
            )

        in_channels = _config_get(unet, "in_channels")
        out_channels = _config_get(unet, "out_channels")
        if in_channels is None or out_channels is None:
            raise TypeError(
                "unet must have config.in_channels and config.out_channels (e.g. a "
                f"diffusers.UNet2DModel); got {type(unet).__name__}."
            )
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(
                f"unet.config.out_channels={out_channels} must equal in_channels={in_channels} "
                f"or 2*in_channels (learned variance); this is not an image diffusion model."
            )
        if _config_get(unet, "num_class_embeds") is not None or _config_get(unet, "class_embed_type") is not None:
            raise ValueError(
                "class-conditional UNets are not supported: the denoiser has no class labels. "
                "Use an unconditional checkpoint (e.g. 256x256_diffusion_uncond.pt)."
            )
        if hasattr(unet, "eval"):
            unet.eval()

        self.unet = unet
        self.scheduler = scheduler
        self.prediction_type: str = prediction_type
        self.learned_variance: bool = out_channels == 2 * in_channels
        self._in_channels = int(in_channels)
        self.sample_size = _config_get(unet, "sample_size")
        self.num_steps = num_steps
        self.eta = float(eta)
        self.exact_noise_match = bool(exact_noise_match)
        self.clip = bool(clip)
        self.resize = resize
        self.interpolation = interpolation
        self.differentiable = bool(differentiable)
        self.channels_last = bool(channels_last)
        if self.channels_last and hasattr(unet, "to"):
            unet.to(memory_format=torch.channels_last)
        if compile:
            options = compile if isinstance(compile, dict) else {}
            self._unet_call = torch.compile(unet, **options)
        else:
            self._unet_call = unet

    # ------------------------------------------------------------------ public
    @property
    def in_channels(self) -> int:
        """Number of image channels the UNet expects."""
        return self._in_channels

    @property
    def max_sigma(self) -> float:
        """Largest noise std (in [0, 1] pixel units) the schedule can denoise."""
        return max_sigma(self._abar)

    def timestep(self, sigma: float) -> int:
        """The timestep ``t*`` used for pixel noise std ``sigma`` ([0, 1] units)."""
        return timestep_for_sigma(self._abar, sigma)

    def timesteps(self, sigma: float) -> list[int]:
        """The UNet evaluation timesteps for ``sigma``, first to last.

        ``[t*]`` for ``num_steps == 1``; otherwise
        ``round(linspace(t*, 0, num_steps))`` without repeats.
        """
        t_star = self.timestep(sigma)
        if self.num_steps == 1:
            return [t_star]
        grid = torch.linspace(float(t_star), 0.0, self.num_steps, dtype=torch.float64).round().long()
        return [int(t) for t in torch.unique_consecutive(grid)]

    def __call__(
        self,
        x_noisy: Tensor,
        sigma: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Denoise a batch.

        Parameters
        ----------
        x_noisy : torch.Tensor
            ``N x C x H x W`` batch ``x + delta`` in [0, 1] pixel units
            (unclamped), ``delta ~ N(0, sigma**2 I)``.
        sigma : float
            Noise std in [0, 1] pixel units; finite, > 0 and at most
            :attr:`max_sigma`.
        generator : torch.Generator, optional
            Randomness for ``exact_noise_match`` and ``eta > 0``; without it
            the global torch RNG is used.

        Returns
        -------
        torch.Tensor
            Same shape, dtype and device as ``x_noisy``; [0, 1] pixel units
            (exactly within [0, 1] when ``clip``).
        """
        sigma_f = validate_denoiser_inputs(
            x_noisy, sigma, generator, in_channels=self._in_channels, who=self._who()
        )
        steps = self.timesteps(sigma_f)
        height, width = int(x_noisy.shape[-2]), int(x_noisy.shape[-1])
        work_dtype = torch.float64 if x_noisy.dtype == torch.float64 else torch.float32
        x = x_noisy.to(work_dtype)

        model_size = self._model_size(height, width)
        resized = model_size != (height, width)
        if resized:
            x = self._resample(x, model_size)

        abar = float(self._abar[steps[0]])
        x_t = math.sqrt(abar) * (2.0 * x - 1.0)
        if self.exact_noise_match:
            extra_var = max((1.0 - abar) - 4.0 * sigma_f**2 * abar, 0.0)
            x_t = x_t + math.sqrt(extra_var) * self._randn(x_t, generator)

        grad_ctx = contextlib.nullcontext() if self.differentiable else torch.no_grad()
        with grad_ctx:
            x0 = self._sample(x_t, steps, generator)
            out = (x0 + 1.0) / 2.0
            if resized:
                out = self._resample(out, (height, width))
            if self.clip:
                out = out.clamp(0.0, 1.0)
        return out.to(x_noisy.dtype)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str,
        subfolder: str | None = None,
        scheduler: Any = None,
        *,
        scheduler_subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> "DiffusionDenoiser":
        """Load a diffusers ``UNet2DModel`` (+ scheduler) and wrap it.

        Uses diffusers' own ``UNet2DModel.from_pretrained`` and
        ``DDPMScheduler.from_pretrained``, so a local folder (written with
        ``save_pretrained``) or a Hugging Face Hub id both work.

        Parameters
        ----------
        path_or_hub_id : str or path
            Local folder or Hub repository id (e.g. ``"google/ddpm-cifar10-32"``).
        subfolder : str, optional
            Folder of the UNet inside ``path_or_hub_id`` (e.g. ``"unet"`` for the
            diffusers pipeline layout); ``None`` = the root.
        scheduler : scheduler object or str, optional
            A scheduler instance to use as is, or a folder/Hub id to load a
            ``DDPMScheduler`` from. ``None`` loads it from ``path_or_hub_id``.
        scheduler_subfolder : str, optional
            Folder of ``scheduler_config.json``. Default: the root when
            ``subfolder`` is ``None``, otherwise the sibling folder
            ``"scheduler"`` of ``subfolder`` (``"unet"`` -> ``"scheduler"``).
        torch_dtype : torch.dtype, optional
            dtype to load the UNet weights in.
        device : str or torch.device, optional
            Device to move the UNet to.
        local_files_only : bool, default False
            Never touch the network (passed to diffusers).
        revision, cache_dir : str, optional
            Passed to diffusers' loaders.
        **kwargs
            Keyword arguments of :class:`DiffusionDenoiser` (``num_steps``,
            ``exact_noise_match``, ``clip``, ...).

        Returns
        -------
        DiffusionDenoiser

        Raises
        ------
        FileNotFoundError
            If a local path does not exist (no Hub download is tried for it), or a local
            folder lacks ``config.json``, the weights or ``scheduler_config.json``.
        ValueError
            If a file in a local folder is damaged (invalid JSON, empty or truncated
            safetensors, ...); the message names the file and the fix.
        """
        import os

        from diffusers import DDPMScheduler, UNet2DModel
        from safetensors import SafetensorError

        from ..weight_files import diagnose_diffusers_folder, local_model_folder

        # A local folder that fails to load gets an error naming the damaged file and the fix.
        fix = (
            "pass a folder written by UNet2DModel.save_pretrained and scheduler.save_pretrained "
            "(captum_fvit.models.save_denoiser writes both), or a Hub id such as "
            "'google/ddpm-cifar10-32'; save or download a damaged model again"
        )
        failures = (OSError, ValueError, RuntimeError, SafetensorError)
        local = local_model_folder(path_or_hub_id, "diffusers UNet", fix)
        path_or_hub_id = str(local) if local is not None else os.fspath(path_or_hub_id)
        hub_kwargs: dict[str, Any] = {"local_files_only": local_files_only}
        if revision is not None:
            hub_kwargs["revision"] = revision
        if cache_dir is not None:
            hub_kwargs["cache_dir"] = cache_dir

        unet_kwargs = dict(hub_kwargs)
        if torch_dtype is not None:
            unet_kwargs["torch_dtype"] = torch_dtype
        try:
            unet = UNet2DModel.from_pretrained(path_or_hub_id, subfolder=subfolder, **unet_kwargs)
        except failures as err:
            if local is None:
                raise
            raise diagnose_diffusers_folder(local, subfolder, "config.json", err, fix) from err
        if device is not None:
            unet = unet.to(device)

        if scheduler is None or isinstance(scheduler, (str, os.PathLike)):
            source_folder = local if scheduler is None else local_model_folder(scheduler, "scheduler", fix)
            source = path_or_hub_id if scheduler is None else os.fspath(scheduler)
            if scheduler_subfolder is None and subfolder:
                scheduler_subfolder = posixpath.join(posixpath.dirname(subfolder.strip("/")), "scheduler")
            try:
                scheduler = DDPMScheduler.from_pretrained(source, subfolder=scheduler_subfolder, **hub_kwargs)
            except failures as err:
                if source_folder is None:
                    raise
                raise diagnose_diffusers_folder(
                    source_folder, scheduler_subfolder, "scheduler_config.json", err,
                    f"pass scheduler= (a DDPMScheduler or its folder), or {fix}", weights=(),
                ) from err
        return cls(unet, scheduler, **kwargs)

    def __repr__(self) -> str:
        return (
            f"DiffusionDenoiser(unet={type(self.unet).__name__}, prediction_type={self.prediction_type!r}, "
            f"learned_variance={self.learned_variance}, sample_size={self.sample_size!r}, "
            f"num_steps={self.num_steps}, eta={self.eta}, exact_noise_match={self.exact_noise_match}, "
            f"clip={self.clip}, resize={self.resize!r})"
        )

    # ----------------------------------------------------------------- helpers
    def _who(self) -> str:
        return f"DiffusionDenoiser({type(self.unet).__name__})"

    def _model_size(self, height: int, width: int) -> tuple[int, int]:
        size = self.sample_size
        if self.resize == "never" or size is None:
            return height, width
        if isinstance(size, int):
            return size, size
        return int(size[0]), int(size[1])

    def _resample(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True)

    @staticmethod
    def _randn(like: Tensor, generator: Any) -> Tensor:
        return randn_like(like, generator)

    def _model_output(self, x_t: Tensor, t: int) -> Tensor:
        dtype, device = _module_dtype_device(self.unet)
        timesteps = torch.full((x_t.shape[0],), t, dtype=torch.long, device=device)
        x_in = x_t.to(device=device, dtype=dtype)
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        out = _unwrap_sample(self._unet_call(x_in, timesteps))
        out = out.to(device=x_t.device, dtype=x_t.dtype)
        channels = x_t.shape[1]
        if out.shape[1] == 2 * channels and self.learned_variance:
            out = out[:, :channels]
        if out.shape != x_t.shape:
            raise RuntimeError(
                f"UNet output has shape {tuple(out.shape)}, expected {tuple(x_t.shape)} "
                f"(or {2 * channels} channels for learned variance)."
            )
        return out

    def _predict(self, x_t: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """Return ``(x0_hat, eps_hat)`` in [-1, 1] units at timestep ``t``."""
        abar = float(self._abar[t])
        sa, s1a = math.sqrt(abar), math.sqrt(1.0 - abar)
        out = self._model_output(x_t, t)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x_t - s1a * eps) / sa
        elif self.prediction_type == "v_prediction":
            x0 = sa * x_t - s1a * out
            eps = sa * out + s1a * x_t
        else:  # "sample"
            x0 = out
            eps = (x_t - sa * x0) / s1a
        if self.clip:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x_t - sa * x0) / s1a
        return x0, eps

    def _sample(self, x_t: Tensor, steps: list[int], generator: torch.Generator | None) -> Tensor:
        x = x_t
        for i, t in enumerate(steps):
            x0, eps = self._predict(x, t)
            if i == len(steps) - 1:
                return x0
            abar_t = float(self._abar[t])
            abar_s = float(self._abar[steps[i + 1]])
            std = self.eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
            x = math.sqrt(abar_s) * x0 + math.sqrt(max(1.0 - abar_s - std**2, 0.0)) * eps
            if std > 0.0:
                x = x + std * self._randn(x, generator)
        raise AssertionError("unreachable: steps is never empty")
