# %% [markdown]
# # Support your own ViT: a custom attention adapter
#
# captum-fvit finds the attention of timm, torchvision and Hugging Face ViTs by itself. For
# any other model, write an *adapter*: a small class that says where the attention layers
# are, how to read their probabilities, and how the tokens are laid out. Register it once,
# and every explainer (`AttentionMap`, `DDSAttention`, `FaithfulRegion`) works with the
# model.
#
# This tutorial writes a minimal ViT in plain PyTorch and an adapter for it.

# %%
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import nn

from captum_fvit import AttentionMap, DDSAttention, IdentityDenoiser
from captum_fvit.attention import AttentionAdapter, AttentionRecorder, register_adapter

OUT = Path(os.environ.get("CAPTUM_FVIT_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="fvit_"))
OUT = OUT / "05_custom_adapter"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A model captum-fvit does not know
#
# A pre-norm ViT with a class token. What matters for the adapter: each block's attention
# module computes its probabilities with an `nn.Softmax` submodule, and the output of that
# submodule is the very tensor that multiplies the values. That is the tensor to record
# (and, for gradient methods, to differentiate with respect to).

# %%
class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        probs = self.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5)
        return self.proj((probs @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, image=32, patch=4, dim=48, depth=3, heads=3, classes=6) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + (image // patch) ** 2, dim) * 0.5)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


torch.manual_seed(0)
model = TinyViT().eval()

# %% [markdown]
# ## The adapter
#
# Subclass `AttentionAdapter` and implement four methods:
#
# - `matches(model)`: whether this adapter handles the model;
# - `attention_modules(model)`: the attention modules in forward order (layer 0 first);
# - `patch_size(model)`: patch height and width in pixels;
# - `attach(model, layers, emit, stack)`: make the requested layers report their attention.
#   Call `emit(layer, probs, anchor, convert)` once per layer and forward pass with the
#   N×heads×T×T probabilities; `anchor` is the tensor whose gradient gives ∂score/∂probs
#   (here `probs` itself, so `convert` is `None`). Register the undo of every change on
#   `stack`: the recorder closes it on exit and on errors, which must leave the model
#   exactly as it was.
#
# Optionally override `num_prefix_tokens` (tokens before the patches: class, distillation,
# register tokens; inferred from the sequence length when `None`) and `cls_index` (`None`
# for models without a class token).

# %%
class TinyViTAdapter(AttentionAdapter):
    """Records the attention of :class:`TinyViT` from each block's ``nn.Softmax``."""

    family = "tutorial TinyViT"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, TinyViT)

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [block.attn for block in model.blocks]

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        return model.patch, model.patch

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return 1  # the class token

    def cls_index(self, model: nn.Module) -> int:
        return 0

    def attach(self, model: nn.Module, layers, emit, stack: ExitStack) -> None:
        modules = self.attention_modules(model)
        for layer in layers:

            def hook(_softmax, _args, probs, layer=layer):
                emit(layer, probs, probs, None)

            handle = modules[layer].softmax.register_forward_hook(hook)
            stack.callback(handle.remove)


register_adapter(TinyViTAdapter())

# %% [markdown]
# ## Check the adapter
#
# Record all layers with `AttentionRecorder`, compare with the softmax computed by hand
# from the model's own weights, and check that no hook is left behind.

# %%
images = torch.rand(2, 3, 32, 32)
with AttentionRecorder(model) as recorder:
    model(images)
recorded = recorder.store.attentions
print("recorded layers:", sorted(recorded), "shape:", tuple(recorded[0].shape))
print("token layout:", recorder.layout(images.shape[-2:]))

with torch.no_grad():
    x = model.embed(images).flatten(2).transpose(1, 2)
    x = torch.cat([model.cls.expand(2, -1, -1), x], dim=1) + model.pos
    attn = model.blocks[0].attn
    q, k, _ = attn.qkv(model.blocks[0].norm1(x)).reshape(2, 65, 3, 3, 16).permute(2, 0, 3, 1, 4)
    by_hand = (q @ k.transpose(-2, -1) * 16**-0.5).softmax(dim=-1)
torch.testing.assert_close(recorded[0], by_hand)
assert all(not block.attn.softmax._forward_hooks for block in model.blocks)

# %% [markdown]
# ## Explain it like any other ViT
#
# Every method works now, including the gradient-based ones and DDS. (The model takes
# [0, 1] pixels directly, which is the default normalisation when a model carries no
# timm `pretrained_cfg`.)

# %%
explanations = {}
for method in ("raw", "rollout", "grad_rollout", "attn_gradcam"):
    tokens = AttentionMap(model, method).token_map(images, target=1)
    explanations[method] = tokens.shape
    print(f"{method:13s} token map {tuple(tokens.shape)}")

dds = DDSAttention(model, IdentityDenoiser(), "grad_rollout", sigma=0.1, n_samples=8)
smoothed = dds.attribute(images, target=1, seed=0)
print("DDSAttention:", tuple(smoothed.shape), "grid", dds.token_grid(images.shape[-2:]))

report = {
    "adapter": TinyViTAdapter.family,
    "token_maps": {m: list(s) for m, s in explanations.items()},
    "dds_shape": list(smoothed.shape),
}
(OUT / "adapter.json").write_text(json.dumps(report, indent=2))
print("wrote", OUT / "adapter.json")
