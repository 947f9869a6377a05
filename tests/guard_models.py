"""A one-layer ViT whose smoothed class-token attention ranking is linear-Gaussian, for the
certificate guard tests (tests/test_certificate_guards.py).

``ProbitViT`` is a real (if minimal) Vision Transformer: convolutional patch embedding, a
class token, positional embeddings, one single-head softmax attention layer (probabilities
from an ``nn.Softmax`` submodule, recorded by :class:`ProbitViTAdapter`) and a linear head
on the class token. Its weights are set so that the class-token query is a constant vector
``[κ, 0, …]`` and keys read channel 0 of the token embeddings, whose patch part is ``u·p_i``
(``u`` a unit vector, ``p_i`` the flattened pixels of patch ``i``) and whose positional part
is a bias ``b_i``. Hence the class-token attention logit of patch ``i`` is

    s_i(x) = κ (u·p_i(x) + b_i),

*affine in the pixels*, and the top-k of the raw attention map is the top-k of ``s``. With
biases far above (``+FAR``), far below (``-FAR``) or at 0 (two contested tokens A and B), and
Gaussian pixel noise of std σ, the vote-smoothed map of a contested pair is exactly

    g_A(x) = P(s_A > s_B) = Φ(u·(p_A − p_B) / (σ √2)),   g_B = 1 − g_A,

(up to a probability ~Φ(−FAR/σ) of the far tokens moving) so ``Φ⁻¹(g_A)`` is affine with
gradient norm exactly ``1/σ``: the Lipschitz lemma behind the certificate is *tight* along
``−(u_A − u_B)``, and the certified radius is nearly the true one.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn

from captum_fvit.attention import AttentionAdapter

#: Attention-logit bias that keeps a token always in (``+FAR``) or out of (``-FAR``) the top-k.
FAR = 20.0


class _Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # one head: N×1×T×T probabilities, as the attention adapters expect
        q, k, v = (layer(tokens).unsqueeze(1) for layer in (self.q, self.k, self.v))
        probs = self.softmax(q @ k.transpose(-2, -1))
        return (probs @ v)[:, 0]


class ProbitViT(nn.Module):
    """One-layer, one-head ViT with class-token attention logits ``κ (u·p_i + b_i)``.

    Parameters
    ----------
    biases : Tensor
        ``T`` attention-logit biases ``b_i`` of the patch tokens (row-major grid).
    channels, image, patch : int
        Input channels, square image side and patch side in pixels.
    dim, classes : int
        Embedding width and number of classes.
    kappa : float
        Steepness of the attention softmax (does not change its ranking).
    seed : int
        Seed of the random weights (``u``, values, head).
    """

    def __init__(
        self,
        biases: torch.Tensor,
        *,
        channels: int = 1,
        image: int = 16,
        patch: int = 4,
        dim: int = 4,
        classes: int = 3,
        kappa: float = 4.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        grid = image // patch
        tokens = grid * grid
        if biases.shape != (tokens,):
            raise ValueError(f"need {tokens} biases, got shape {tuple(biases.shape)}")
        generator = torch.Generator().manual_seed(seed)
        self.patch = patch
        self.patch_embed = nn.Conv2d(channels, dim, patch, stride=patch, bias=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + tokens, dim))
        self.attn = _Attention(dim)
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():
            weight = torch.randn(dim, channels * patch * patch, generator=generator)
            weight[0] /= weight[0].norm()  # u, a unit vector
            self.patch_embed.weight.copy_(weight.view(dim, channels, patch, patch))
            self.pos[0, 1:, 0] = biases
            self.pos[0, 1:, 1:] = 0.3 * torch.randn(tokens, dim - 1, generator=generator)
            self.pos[0, 0, 0] = -FAR  # the class token attends to the patches only
            self.attn.q.weight.zero_()
            self.attn.q.bias.zero_()
            self.attn.q.bias[0] = kappa  # every query is [κ, 0, ...]
            self.attn.k.weight.zero_()
            self.attn.k.weight[0, 0] = 1.0  # keys read channel 0
            self.attn.k.bias.zero_()
            self.attn.v.weight.copy_(torch.randn(dim, dim, generator=generator))
            self.attn.v.bias.zero_()
            self.head.weight.copy_(torch.randn(classes, dim, generator=generator))
            self.head.bias.zero_()
        self.eval()

    @property
    def u(self) -> torch.Tensor:
        """The unit vector ``u`` (``C×p×p``) of the attention logits."""
        return self.patch_embed.weight[0].detach().clone()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        return self.head(self.attn(x)[:, 0])


class ProbitViTAdapter(AttentionAdapter):
    """Records :class:`ProbitViT`'s attention from its ``nn.Softmax`` (passed explicitly as
    ``adapter=``; not registered globally)."""

    family = "test ProbitViT"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, ProbitViT)

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.attn]

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        return model.patch, model.patch

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return 1

    def cls_index(self, model: nn.Module) -> int:
        return 0

    def attach(self, model: nn.Module, layers, emit, stack: ExitStack) -> None:
        for layer in layers:

            def hook(_softmax, _args, probs, layer=layer):
                emit(layer, probs, probs, None)

            handle = model.attn.softmax.register_forward_hook(hook)
            stack.callback(handle.remove)


ADAPTER = ProbitViTAdapter()
