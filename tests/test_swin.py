"""Swin (timm, torchvision v1/v2, Hugging Face): recorded full attention matrices equal a
plain-loop assembly from the modules' own weights, gradients, the explanation methods against
numpy loops (children rule across patch merging, mean query), restoration and bad input, and
the smoothing/certification/evaluation pipeline running unchanged on a Swin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import model_state
from swin_models import (
    SWIN_FAMILIES,
    SWIN_IMAGE,
    logits,
    make_timm_swin,
    make_torchvision_swin,
    swin_images,
)

from captum_fvit import AttentionMap, DDSAttention, FaithfulRegion
from captum_fvit.attention import (
    AttentionRecorder,
    TokenLayout,
    TransformersViTAdapter,
    WindowGeometry,
    assemble_windows,
    find_adapter,
)
from captum_fvit.explain import METHODS, TokenMapExplainer, attention_rollout, gradient_rollout
from captum_fvit.explain.stages import spread_to_children


def _family(name):
    make, size, grids = SWIN_FAMILIES[name]
    return make(), size, grids


# -- plain-loop reference of one block's full attention ------------------------------------
def _blocks(name, model):
    if name == "timm":
        return [b for stage in model.layers for b in stage.blocks]
    if name.startswith("torchvision"):
        return [b for stage in model.features for b in stage.children() if hasattr(b, "attn")]
    return [b for stage in model.swin.encoder.layers for b in stage.blocks]


def _capture_attention_inputs(name, model):
    """Each block's normalised N×H×W×C grid, the tensor its windows are cut from."""
    seen, handles = {}, []
    for i, block in enumerate(_blocks(name, model)):
        if name == "timm":

            def hook(_m, _a, out, i=i):
                seen[i] = out

            handles.append(block.norm1.register_forward_hook(hook))
        elif name.startswith("torchvision"):

            def pre(_m, args, i=i):
                seen[i] = args[0]

            handles.append(block.attn.register_forward_pre_hook(pre))
        else:

            def dims(_m, args, i=i):
                seen[("dims", i)] = args[1]

            def hook(_m, _a, out, i=i):
                h, w = seen[("dims", i)]
                seen[i] = out.view(out.shape[0], h, w, -1)

            handles.append(block.register_forward_pre_hook(dims))
            handles.append(block.layernorm_before.register_forward_hook(hook))
    return seen, handles


def _window_rules(name, block, height, width):
    """(window, shift, pad_first) of a block, following each library's own rules."""
    if name == "timm":
        return tuple(block.window_size), tuple(block.shift_size), False
    if name.startswith("torchvision"):
        window = tuple(block.attn.window_size)
        shift = list(block.attn.shift_size)
        padded = (
            math.ceil(height / window[0]) * window[0],
            math.ceil(width / window[1]) * window[1],
        )
        for axis in range(2):
            if window[axis] >= padded[axis]:
                shift[axis] = 0
        return window, tuple(shift), True
    w, s = int(block.window_size), int(block.shift_size)
    return (w, w), (s, s), True


def _qk_logits(name, block, feats):
    """Attention logits (before bias and mask) of one window: feats B×A×C → B×heads×A×A."""
    b, a, c = feats.shape
    if name == "timm":
        attn = block.attn
        heads = attn.num_heads
        qkv = attn.qkv(feats).reshape(b, a, 3, heads, -1).permute(2, 0, 3, 1, 4)
        return (qkv[0] * attn.scale) @ qkv[1].transpose(-2, -1)
    if name.startswith("torchvision"):
        attn = block.attn
        heads = attn.num_heads
        bias = attn.qkv.bias
        if name == "torchvision_v2":
            bias = bias.clone()
            bias[c : 2 * c] = 0  # v2 has no key bias
        qkv = F.linear(feats, attn.qkv.weight, bias)
        qkv = qkv.reshape(b, a, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        if name == "torchvision_v2":
            scale = torch.clamp(attn.logit_scale, max=math.log(100.0)).exp()
            return (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * scale
        return (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    attn = block.attention
    q = attn.q_proj(feats).view(b, a, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(feats).view(b, a, -1, attn.head_dim).transpose(1, 2)
    return (q @ k.transpose(-2, -1)) * attn.scaling


def _relative_bias(name, block, window, pi, pj):
    """heads-vector of the relative-position bias between window positions pi and pj."""
    wh, ww = window
    if name == "torchvision_v2":
        return block.attn.get_relative_position_bias()[0, :, pi[0] * ww + pi[1], pj[0] * ww + pj[1]]
    if name == "timm":
        table = block.attn.relative_position_bias_table
    elif name == "torchvision":
        table = block.attn.relative_position_bias_table
    else:
        table = block.attention.relative_position_bias.relative_position_bias_table
    index = (pi[0] - pj[0] + wh - 1) * (2 * ww - 1) + (pi[1] - pj[1] + ww - 1)
    return table[index]


def _region(v, size, win, shift):
    if shift == 0:
        return 0
    return 0 if v < size - win else (1 if v < size - shift else 2)


def _loop_reference(name, block, grid):
    """Full N×heads×T×T attention of one block, assembled window by window."""
    n, height, width, channels = grid.shape
    window, shift, pad_first = _window_rules(name, block, height, width)
    (wh, ww), (sh, sw) = window, shift
    hp, wp = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww
    tokens = height * width
    flat = grid.reshape(n, tokens, channels)
    out = None
    for a in range(hp // wh):
        for b in range(wp // ww):
            cells = [(a * wh + p, b * ww + q) for p in range(wh) for q in range(ww)]
            owners = []
            for y, x in cells:
                if pad_first:  # roll(pad(x)) over the padded frame
                    sy, sx = (y + sh) % hp, (x + sw) % wp
                    owners.append(sy * width + sx if sy < height and sx < width else None)
                elif y < height and x < width:  # pad(roll(x)) over the H×W grid
                    owners.append(((y + sh) % height) * width + (x + sw) % width)
                else:
                    owners.append(None)
            feats = torch.stack(
                [flat[:, t] if t is not None else flat.new_zeros(n, channels) for t in owners], 1
            )
            scores = _qk_logits(name, block, feats).double()
            if out is None:
                out = torch.zeros(n, scores.shape[1], tokens, tokens, dtype=torch.float64)
            area = len(cells)
            for i in range(area):
                for j in range(area):
                    pi, pj = (i // ww, i % ww), (j // ww, j % ww)
                    scores[:, :, i, j] += _relative_bias(name, block, window, pi, pj).double()
                    if sh or sw:
                        ri = (_region(cells[i][0], hp, wh, sh), _region(cells[i][1], wp, ww, sw))
                        rj = (_region(cells[j][0], hp, wh, sh), _region(cells[j][1], wp, ww, sw))
                        if ri != rj:
                            scores[:, :, i, j] -= 100.0
            probs = scores.softmax(-1)
            for i, ti in enumerate(owners):
                for j, tj in enumerate(owners):
                    if ti is not None and tj is not None:
                        out[:, :, ti, tj] = probs[:, :, i, j]
    return out


@pytest.mark.parametrize("name", sorted(SWIN_FAMILIES))
def test_recorded_full_attention_equals_plain_loop_assembly(name):
    model, size, grids = _family(name)
    x = swin_images(2, size=size)
    seen, handles = _capture_attention_inputs(name, model)
    try:
        with AttentionRecorder(model) as recorder, torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    blocks = _blocks(name, model)
    assert sorted(recorder.store.attentions) == list(range(len(blocks))) == [0, 1, 2, 3]
    for i, block in enumerate(blocks):
        got = recorder.store.attentions[i]
        h, w = grids[0 if i < 2 else 1]
        assert got.shape[-2:] == (h * w, h * w)
        with torch.no_grad():
            expected = _loop_reference(name, block, seen[i])
        torch.testing.assert_close(got.double(), expected, atol=2e-6, rtol=1e-5)
    # The configurations exercise what they claim: padding (rows losing mass to padded keys)
    # and shifted windows (a block whose entries differ from the unshifted pattern).
    attn = recorder.store.attentions
    assert (attn[0].sum(-1) < 0.999).any() and not torch.equal(attn[1] > 0, attn[0] > 0)


@pytest.mark.parametrize("name", sorted(SWIN_FAMILIES))
def test_recording_leaves_outputs_unchanged(name):
    model, size, _ = _family(name)
    x = swin_images(2, size=size)
    with torch.no_grad():
        plain = logits(model(x))
        with AttentionRecorder(model):
            recorded = logits(model(x))
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)


def test_timm_swin_records_its_own_explicit_path_bit_for_bit():
    model = make_timm_swin()
    modules = find_adapter(model).attention_modules(model)
    x = swin_images(2)
    with torch.no_grad():
        fused = model(x)
        for m in modules:
            m.fused_attn = False
        explicit = model(x)
        for m in modules:
            m.fused_attn = True
        with AttentionRecorder(model):
            assert not any(m.fused_attn for m in modules)
            recorded = model(x)
        assert all(m.fused_attn for m in modules)
        # Only the requested layers are unfused (CPU SDPA is not bitwise reproducible
        # between calls, so mixed fused/explicit runs are compared with a tolerance).
        with AttentionRecorder(model, layers=[1, 2]) as partial:
            assert [m.fused_attn for m in modules] == [True, False, False, True]
            mixed = model(x)
    assert sorted(partial.store.attentions) == [1, 2]
    assert all(m.fused_attn for m in modules)
    assert torch.equal(recorded, explicit)
    torch.testing.assert_close(recorded, fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed, fused, atol=1e-5, rtol=1e-5)


def _forward_attributes(model):
    return {name: "forward" in vars(m) for name, m in model.named_modules()}


@pytest.mark.parametrize("name", sorted(SWIN_FAMILIES))
@pytest.mark.parametrize("gradients", [False, True])
def test_model_restored_exactly_on_exit_errors_and_interrupts(name, gradients):
    model, size, _ = _family(name)
    x = swin_images(2, size=size)
    before = (model_state(model), _forward_attributes(model))
    with AttentionRecorder(model, gradients=gradients) as recorder:
        out = logits(model(x))
        if gradients:
            recorder.backward(out[:, 0].sum())
    assert (model_state(model), _forward_attributes(model)) == before

    for error in (RuntimeError("raised inside the forward pass"), KeyboardInterrupt()):

        class Exploding:
            def on_attention(self, layer, probs, error=error):
                if layer == 2:
                    raise error

            def on_gradient(self, layer, grad):
                pass

        with pytest.raises(type(error)):
            with AttentionRecorder(model, Exploding(), gradients=gradients):
                model(x)
        assert (model_state(model), _forward_attributes(model)) == before
    with torch.no_grad():
        torch.testing.assert_close(logits(model(x)), out.detach(), atol=1e-5, rtol=1e-5)


def test_torchvision_wrapper_restores_an_existing_instance_forward_and_spares_other_models():
    model = make_torchvision_swin()
    other = make_torchvision_swin()
    x = swin_images(2)
    attn = find_adapter(model).attention_modules(model)[0]
    calls = []
    original = attn.forward

    def user_forward(*args, **kwargs):  # a user's own instance-level wrapper
        calls.append(1)
        return original(*args, **kwargs)

    attn.forward = user_forward
    with torch.no_grad():
        expected_other = other(x)
        with AttentionRecorder(model) as recorder:
            model(x)
            # An unrecorded model of the same family runs untouched meanwhile.
            assert torch.equal(other(x), expected_other)
    assert calls == [1] and attn.forward is user_forward
    assert sorted(recorder.store.attentions) == [0, 1, 2, 3]
    assert not any(_forward_attributes(other).values())


class _SoftmaxSpy:
    """Test-only stand-in for ``torch.nn.functional`` inside torchvision's Swin module that
    keeps every softmax output (an independent way to reach the window probabilities)."""

    def __init__(self, seen):
        self.seen = seen

    def __getattr__(self, name):
        return getattr(F, name)

    def softmax(self, *args, **kwargs):
        out = F.softmax(*args, **kwargs)
        self.seen.append(out)
        return out


@pytest.mark.parametrize("name", ["timm", "torchvision", "hf"])
def test_restored_when_attach_fails_half_way(name):
    """An adapter that fails after changing two layers leaves nothing behind."""
    model, _, _ = _family(name)
    base = type(find_adapter(model))

    class Failing(base):
        def attach(self, model, layers, emit, stack):
            super().attach(model, layers[:2], emit, stack)
            raise RuntimeError("attach failed after two layers")

    before = (model_state(model), _forward_attributes(model))
    with pytest.raises(RuntimeError, match="after two layers"):
        with AttentionRecorder(model, adapter=Failing()):
            pass
    assert (model_state(model), _forward_attributes(model)) == before


@pytest.mark.parametrize("name", ["timm", "torchvision", "hf"])
def test_gradient_of_full_matrix_is_the_window_gradient_put_in_place(name, monkeypatch):
    """∂score/∂(full matrix) = ∂score/∂(window probabilities), placed token by token."""
    model, size, grids = _family(name)
    x = swin_images(2, size=size)
    block = _blocks(name, model)[3]
    windows, handle = [], None
    if name == "timm":
        handle = block.attn.attn_drop.register_forward_hook(lambda m, a, o: windows.append(o))
    elif name == "hf":
        handle = block.attention.register_forward_hook(lambda m, a, o: windows.append(o[1]))
    else:
        import torchvision.models.swin_transformer as tv_swin

        monkeypatch.setattr(tv_swin, "F", _SoftmaxSpy(windows))
    try:
        with AttentionRecorder(model, gradients=True) as recorder:
            out = logits(model(x))
            score = out[:, 1].sum() - 0.5 * out[:, 3].sum()
            window_grad = torch.autograd.grad(score, windows[-1], retain_graph=True)[0]
            recorder.backward(score)
    finally:
        if handle is not None:
            handle.remove()
    full_grad = recorder.store.gradients[3]
    assert full_grad.shape == recorder.store.attentions[3].shape and full_grad.abs().max() > 0
    height, width = grids[1]
    window, shift, pad_first = _window_rules(name, block, height, width)
    expected = _place_by_loops(window_grad, height, width, window, shift, pad_first)
    torch.testing.assert_close(full_grad.double(), expected, atol=1e-7, rtol=1e-6)
    # No model parameter received a gradient.
    assert all(p.grad is None for p in model.parameters())


def _place_by_loops(windows, height, width, window, shift, pad_first):
    (wh, ww), (sh, sw) = window, shift
    hp, wp = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww
    n_windows = (hp // wh) * (wp // ww)
    n = windows.shape[0] // n_windows
    tokens = height * width
    out = torch.zeros(n, windows.shape[1], tokens, tokens, dtype=torch.float64)
    for wi in range(n_windows):
        a, b = divmod(wi, wp // ww)
        owners = []
        for p in range(wh):
            for q in range(ww):
                y, x = a * wh + p, b * ww + q
                if pad_first:
                    sy, sx = (y + sh) % hp, (x + sw) % wp
                    owners.append(sy * width + sx if sy < height and sx < width else None)
                elif y < height and x < width:
                    owners.append(((y + sh) % height) * width + (x + sw) % width)
                else:
                    owners.append(None)
        for img in range(n):
            for i, ti in enumerate(owners):
                for j, tj in enumerate(owners):
                    if ti is not None and tj is not None:
                        out[img, :, ti, tj] = windows[img * n_windows + wi, :, i, j].double()
    return out


# -- methods against numpy loops ---------------------------------------------------------
def _merge_matrix(grid):
    h, w = grid
    hc, wc = (h + 1) // 2, (w + 1) // 2
    count = np.zeros(hc * wc)
    for i in range(h):
        for j in range(w):
            count[(i // 2) * wc + j // 2] += 1
    m = np.zeros((hc * wc, h * w))
    for i in range(h):
        for j in range(w):
            parent = (i // 2) * wc + j // 2
            m[parent, i * w + j] = 1.0 / count[parent]
    return m


def _record_all(model, x, target):
    with AttentionRecorder(model, gradients=True) as recorder:
        out = logits(model(x))
        recorder.backward(out[torch.arange(len(x)), target].sum())
        layout = recorder.layout(x.shape[-2:])
    layers = sorted(recorder.store.attentions)
    attns = [recorder.store.attentions[i].double().numpy() for i in layers]
    grads = [recorder.store.gradients[i].double().numpy() for i in layers]
    return attns, grads, layout


def _swin_references(attns, grads, stages, grids):
    n = attns[0].shape[0]
    merge = _merge_matrix(grids[0])
    refs = {k: [] for k in METHODS}
    for s in range(n):
        products, grad_products = {}, {}
        for layer, stage in enumerate(stages):
            a = attns[layer][s]
            t = a.shape[-1]
            step = (a.mean(0) + np.eye(t)) / 2
            step = step / step.sum(1, keepdims=True)
            products[stage] = step @ products.get(stage, np.eye(t))
            cam = np.maximum(grads[layer][s] * a, 0).mean(0)
            grad_products[stage] = (np.eye(t) + cam) @ grad_products.get(stage, np.eye(t))
        for name, prods in (("rollout", products), ("grad_rollout", grad_products)):
            row = prods[1].mean(0) @ merge @ prods[0]
            refs[name].append(row)
        last, last_grad = attns[-1][s], grads[-1][s]
        refs["raw"].append(last.mean(1).mean(0) @ merge)  # mean query per head, then heads
        rows, grad_rows = last.mean(1), last_grad.mean(1)  # heads × T
        weights = grad_rows.mean(1, keepdims=True)
        refs["attn_gradcam"].append(np.maximum((weights * rows).mean(0), 0) @ merge)
    return {k: np.stack(v) for k, v in refs.items()}


@pytest.mark.parametrize("name", ["timm", "hf"])
def test_methods_match_plain_loop_references_on_swin(name):
    model, size, grids = _family(name)
    x = swin_images(3, seed=4, size=size)
    target = torch.tensor([0, 3, 1])
    attns, grads, layout = _record_all(model, x, target)
    assert layout.stage_grids == grids and layout.layer_stages == (0, 0, 1, 1)
    refs = _swin_references(attns, grads, layout.layer_stages, grids)
    for method in sorted(METHODS):
        got = TokenMapExplainer(model, method)(x, target)
        assert got.layout == layout and got.maps.shape == (3, grids[0][0] * grids[0][1])
        np.testing.assert_allclose(got.maps.double().numpy(), refs[method], atol=1e-6, rtol=1e-5)
    # The functional forms on recorded maps read the stages from the layout.
    t_attns = [torch.from_numpy(a) for a in attns]
    t_grads = [torch.from_numpy(g) for g in grads]
    np.testing.assert_allclose(
        attention_rollout(t_attns, layout).numpy(), refs["rollout"], atol=1e-6, rtol=1e-5
    )
    np.testing.assert_allclose(
        gradient_rollout(t_attns, t_grads, layout).numpy(), refs["grad_rollout"], atol=1e-6,
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", sorted(SWIN_FAMILIES))
def test_window_form_fast_path_equals_the_full_matrix_path(name, monkeypatch):
    """The built-in methods work on Swin's compact window form; forcing them onto the full
    matrices (the path the loop references check) gives the same maps."""
    from captum_fvit.explain import gradient, raw, rollout

    model, size, _ = _family(name)
    x = swin_images(2, seed=7, size=size)
    received = []

    class Spy:
        accepts_windows = True

        def on_attention(self, layer, probs):
            received.append(type(probs).__name__)

        def on_gradient(self, layer, grad):
            received.append(type(grad).__name__)

    with AttentionRecorder(model, Spy(), gradients=True) as recorder:
        recorder.backward(logits(model(x))[:, 0].sum())
    assert received == ["WindowedAttention"] * 8
    options = {"raw": {"head_fusion": "max"}, "rollout": {"start_layer": 1}}
    fast = {m: TokenMapExplainer(model, m, **options.get(m, {}))(x, 2).maps for m in METHODS}
    for module, names in (
        (raw, ["_RawAccumulator"]),
        (rollout, ["_RolloutAccumulator"]),
        (gradient, ["_GradRolloutAccumulator", "_GradCAMAccumulator"]),
    ):
        for cls in names:
            monkeypatch.setattr(getattr(module, cls), "accepts_windows", False)
    for method in sorted(METHODS):
        dense = TokenMapExplainer(model, method, **options.get(method, {}))(x, 2).maps
        torch.testing.assert_close(fast[method], dense, atol=1e-6, rtol=1e-5)


def test_children_rule_spreads_relevance_equally_and_keeps_the_sum():
    grid = (3, 5)  # odd both ways: merged 2×3 with 4-, 2- and 1-child parents
    coarse = torch.arange(1.0, 7.0).reshape(1, 6)
    fine = spread_to_children(coarse, grid)
    expected = np.zeros((3, 5))
    parents = np.arange(1.0, 7.0).reshape(2, 3)
    for i in range(3):
        for j in range(5):
            rows = 2 if 2 * (i // 2) + 1 < 3 else 1
            cols = 2 if 2 * (j // 2) + 1 < 5 else 1
            expected[i, j] = parents[i // 2, j // 2] / (rows * cols)
    np.testing.assert_allclose(fine.reshape(3, 5).numpy(), expected)
    assert fine.sum().item() == pytest.approx(coarse.sum().item())
    np.testing.assert_allclose(
        fine.double().numpy(), coarse.double().numpy() @ _merge_matrix(grid), atol=1e-12
    )


def test_rollout_of_an_unpadded_swin_sums_to_one():
    """Without padding every attention row sums to 1; rollout rows and the 2×2 rule keep
    that, so the mean-query map is a distribution over the first grid."""
    model = make_timm_swin(img_size=32, window_size=4)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = TokenMapExplainer(model, "rollout")(x)
    assert result.layout.stage_grids == ((8, 8), (4, 4))
    torch.testing.assert_close(result.maps.sum(-1), torch.ones(2), atol=1e-5, rtol=0)
    assert (result.maps > 0).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_swin_batch_equals_single_calls(method):
    model = make_torchvision_swin()
    x = swin_images(3, seed=6)
    explainer = TokenMapExplainer(model, method)
    batch = explainer(x)
    singles = torch.cat([explainer(x[i : i + 1]).maps for i in range(3)])
    torch.testing.assert_close(batch.maps, singles, atol=1e-6, rtol=1e-5)
    if explainer.method.class_specific:
        assert torch.equal(batch.target, batch.logits.argmax(1))
        assert not torch.allclose(explainer(x, 0).maps, explainer(x, 1).maps)


# -- layout, grid and bad input ----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SWIN_FAMILIES))
def test_layout_and_token_grid(name):
    model, size, grids = _family(name)
    x = swin_images(1, size=size)
    with AttentionRecorder(model, layers=[-1]) as recorder, torch.no_grad():
        model(x)
    layout = recorder.layout(size)
    assert layout == TokenLayout(0, grids[0], (4, 4), None, grids, (0, 0, 1, 1))
    assert AttentionMap(model).token_grid(size) == grids[0]
    attribution = AttentionMap(model, "raw", upsample="nearest").attribute(x)
    assert attribution.shape == x.shape


def test_hf_swin_pads_the_image_to_whole_patches():
    model, _, _ = _family("hf")
    x = torch.randn(1, 3, 42, 58)  # 10.5 × 14.5 patches → 11×15 after Hugging Face's padding
    assert AttentionMap(model).token_grid((42, 58)) == (11, 15)
    result = TokenMapExplainer(model, "rollout")(x)
    assert result.layout.grid == (11, 15) and result.maps.shape == (1, 165)


def test_swin_bad_input_gets_clear_errors():
    model = make_timm_swin()
    with pytest.raises(ValueError, match="4 attention layers"):
        AttentionRecorder(model, layers=[4])
    with pytest.raises(ValueError, match="start_layer=9"):
        TokenMapExplainer(model, "rollout", start_layer=9)
    adapter = find_adapter(model)
    with pytest.raises(ValueError, match="cannot match 50 tokens of layer 0"):
        adapter.layout(model, SWIN_IMAGE, {0: 50})
    geometry = WindowGeometry(6, 10, (4, 4), (2, 2), False)
    with pytest.raises(ValueError, match="does not fit 6 windows of 16 tokens"):
        assemble_windows(torch.rand(5, 2, 16, 16), geometry)
    with pytest.raises(ValueError, match="does not fit the 2x3 grid"):
        spread_to_children(torch.rand(1, 5), (3, 5))
    with pytest.raises(ValueError, match="first stage's grid"):
        TokenLayout(0, (6, 10), (4, 4), None, ((3, 5), (6, 10)), (0, 1))
    max_pooled = make_timm_swin(global_pool="max")
    with pytest.raises(ValueError, match="global_pool='max'"):
        AttentionMap(max_pooled, "rollout")
    # Hugging Face's generic ViT adapter must not claim a Swin (its recorded "attentions"
    # are whole stages).
    hf, _, _ = _family("hf")
    assert not TransformersViTAdapter().matches(hf)


def test_window_geometry_places_every_token_exactly_once():
    for pad_first in (False, True):
        for shift in ((0, 0), (2, 2), (0, 2)):
            index = WindowGeometry(6, 10, (4, 4), shift, pad_first).token_index()
            real = index[index >= 0]
            assert sorted(real.tolist()) == list(range(60))
            assert index.shape == (6, 16)


# -- the pipeline runs unchanged on a Swin ----------------------------------------------
def test_dds_attention_faithful_region_and_evaluate_run_on_swin():
    from captum_fvit.data import ShapesBenchmark
    from captum_fvit.evaluate import EvaluationConfig, evaluate

    model = make_timm_swin(img_size=32, num_classes=6)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    dds = DDSAttention(model, None, "grad_rollout", sigma=0.1, n_samples=4, batch_size=8)
    smoothed = dds.attribute(x, target=1, seed=0)
    assert smoothed.shape == x.shape and torch.isfinite(smoothed).all()
    assert torch.equal(smoothed, dds.attribute(x, target=1, seed=0))
    details = dds.details(x, target=1, seed=0)
    assert details.layout.grid == (8, 8) and details.layout.stage_grids == ((8, 8), (4, 4))

    region = FaithfulRegion(
        model, None, "rollout", k=3, beta=2 / 3, alpha=0.05, n=16, n_select=8, sigma=0.1
    )
    certificates = region.certify(x, seed=0)
    assert len(certificates) == 2
    assert all(tuple(c.grid) == (8, 8) and len(c.topk) == 3 for c in certificates)

    dataset = ShapesBenchmark(2, image_size=32, seed=1)
    config = EvaluationConfig(
        methods=["rollout", "grad_rollout"],
        eps=[0.0, 2 / 255],
        attack_steps=2,
        n_samples=2,
        k=4,
        batch_size=2,
        figure_images=1,
    )
    result = evaluate(model, dataset, config=config, progress=False)
    assert result.n_images == 2
    rows = {(r["method"], r["variant"], r["eps"]): r for r in result.rows}
    assert rows[("rollout", "vanilla", 0.0)]["topk_overlap"] == 1.0
    assert all(0 <= r["miou"] <= 1 for r in result.rows)


@pytest.mark.parametrize("method", ["raw", "rollout"])
def test_differentiable_surrogate_matches_the_methods_on_swin_and_pooled(method):
    """The transfer top-k attack's surrogate keeps the graph and gives the same maps as the
    explain methods on Swin (stages, children rule) and on pooled ViTs (mean query)."""
    from conftest import make_timm_vit

    from captum_fvit import AttentionMap
    from captum_fvit.evaluate import AttentionSurrogate

    for model, size in ((make_timm_swin(), SWIN_IMAGE), (make_timm_vit(class_token=False, global_pool="avg"), (32, 32))):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0), requires_grad=True)
        maps = AttentionSurrogate(model, method)(x)
        expected = AttentionMap(model, method).token_map(x.detach())
        torch.testing.assert_close(maps.detach(), expected, atol=1e-5, rtol=1e-4)
        (grad,) = torch.autograd.grad(maps[:, 0].sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
