"""Conv, pseudo-conv and residual models: closed-form local updates, pathways, masks, oracles."""

from __future__ import annotations

import io

import pytest
import torch

from reclra.layers import Layer, local_grads
from reclra.models import build_model
from reclra.ops import ConvOp, PseudoConvOp
from reclra.rules import FA, Backprop, RecLRA, build_rule

pytestmark = pytest.mark.usefixtures("float64")  # see conftest.py


def test_conv_local_update_is_the_weight_gradient_correlation():
    torch.manual_seed(0)
    op = ConvOp((2, 5, 5), 3, kernel_size=3)  # padding 1
    layer = Layer(op, "relu", out_shape=(3, 5, 5))
    z, e = torch.randn(4, 2, 5, 5), torch.randn(4, 3, 5, 5)
    grads = dict((id(p), g) for p, g in local_grads(layer, z.flatten(1), e))
    zp = torch.nn.functional.pad(z, (1, 1, 1, 1))
    want = torch.zeros(3, 2, 3, 3)
    for c in range(3):
        for k in range(2):
            for u in range(3):
                for v in range(3):
                    want[c, k, u, v] = (e[:, c] * zp[:, k, u : u + 5, v : v + 5]).sum() / 4
    torch.testing.assert_close(grads[id(op.conv.weight)], want)
    torch.testing.assert_close(grads[id(op.conv.bias)], e.sum((0, 2, 3)) / 4)


def test_pseudo_conv_update_is_the_spec_sum():
    """SPEC §4: Δw_c^m = Σ_{i,j} (e_c ⊙ relu(z^m + n^m))[i, j] (batch mean)."""
    torch.manual_seed(1)
    op = PseudoConvOp((3, 4, 4), 2, masks=3, noise=0.1)
    layer = Layer(op, "relu", out_shape=(2, 4, 4))
    z, e = torch.randn(5, 3, 4, 4), torch.randn(5, 2, 4, 4)
    grads = dict((id(p), g) for p, g in local_grads(layer, z.flatten(1), e))
    want = torch.zeros(2, 3)
    for c in range(2):
        for m in range(3):
            want[c, m] = (e[:, c] * torch.relu(z[:, m] + op.masks[m])).sum() / 5
    torch.testing.assert_close(grads[id(op.mix.weight)].view(2, 3), want)
    assert id(op.masks) not in grads and not op.masks.requires_grad


@pytest.mark.parametrize(("c_in", "masks"), [(2, 6), (6, 3)])
def test_pseudo_conv_uses_every_input_channel(c_in, masks):
    op = PseudoConvOp((c_in, 3, 3), 4, masks=masks)
    assert op.assign.shape == (masks, c_in)
    assert (op.assign.sum(0) >= 1).all()  # no input channel is dropped


def test_pseudo_conv_masks_are_fixed_and_restored_from_a_checkpoint():
    torch.manual_seed(2)
    net = build_model(
        "resnet18", input_shape=(1, 8, 8), num_classes=3, width=4, stages=(1, 1),
        conv="pseudo", masks=8,
    )  # fmt: skip
    masks = {n: b.clone() for n, b in net.named_buffers() if n.endswith("masks")}
    assert masks
    rule = RecLRA(net, pathway="blocks")
    opt = torch.optim.Adam(rule.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        rule.compute_grads(torch.randn(6, 64), torch.randint(0, 3, (6,)))
        opt.step()
    for n, b in net.named_buffers():
        if n in masks:
            assert torch.equal(b, masks[n]), f"{n} changed during training"
    buf = io.BytesIO()
    torch.save(rule.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(99)  # a different draw of masks
    fresh = build_model(
        "resnet18", input_shape=(1, 8, 8), num_classes=3, width=4, stages=(1, 1),
        conv="pseudo", masks=8,
    )  # fmt: skip
    restored = RecLRA(fresh, pathway="blocks")
    restored.load_state_dict(torch.load(buf, weights_only=True))
    for n, b in fresh.named_buffers():
        if n in masks:
            assert torch.equal(b, masks[n])


@pytest.mark.parametrize(("beta", "betas"), [(0.2, (0.2, 0.2)), ((0.3, 0.05), (0.3, 0.05))])
def test_blocks_pathway_targets_on_mlp_resnet(beta, betas):
    """Every block output gets its target from the output error, every support layer from its
    block output (000 Algorithm 2); with one β per level, each level displaces by its own."""
    torch.manual_seed(3)
    net = build_model("mlp-resnet", input_shape=(6,), num_classes=3, width=5, blocks=2, gap=2)
    # layers: 1 stem, (2 support, 3 output), (4 support, 5 output), 6 softmax
    rule = RecLRA(net, pathway="blocks", beta=beta)
    assert set(rule.pathway.edges) == {(6, 3), (6, 5), (3, 2), (5, 4), (6, 1)}
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    rule.compute_grads(x, y)
    with torch.no_grad():
        t = net.trace(x)
        e = {6: torch.softmax(t.logits, 1) - torch.nn.functional.one_hot(y, 3)}

        def err(i, j, b):
            d = e[j] @ rule.E[f"{j}->{i}"].t()
            return t.z[i] - torch.tanh(t.h[i] - b * d)

        for i, j, level in [(3, 6, 0), (5, 6, 0), (1, 6, 0), (2, 3, 1), (4, 5, 1)]:
            e[i] = err(i, j, betas[level])
    for ell in range(1, 7):
        want = e[ell].t() @ t.inp[ell] / 4
        torch.testing.assert_close(net.layer(ell).op.weight.grad, want)


def test_beta_per_level_must_match_the_pathway_depth():
    net = build_model("mlp-resnet", input_shape=(6,), num_classes=3, width=5, blocks=2, gap=2)
    with pytest.raises(ValueError, match="beta has 3 values for a pathway of 2 levels"):
        RecLRA(net, pathway="blocks", beta=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="beta must be > 0"):
        RecLRA(net, pathway="blocks", beta=[0.1, 0.0])
    assert RecLRA(net, pathway="skip", beta=[0.4]).betas == (0.4,)


#: small instances of the image models, for 1×8×8 inputs and 3 classes
SMALL = {
    "resnet18": {"width": 4, "stages": (1, 1)},
    "cnn": {"channels": (3, 4), "kernel_size": 3, "hidden": (6,)},
    "mlp-resnet": {"width": 5},
}


def _small(model):
    return build_model(model, input_shape=(1, 8, 8), num_classes=3, **SMALL[model])


def _resnet(conv="standard"):
    return build_model(
        "resnet18", input_shape=(1, 8, 8), num_classes=3, width=4, stages=(1, 1),
        conv=conv, masks=8,
    )  # fmt: skip


@pytest.mark.parametrize("conv", ["standard", "pseudo"])
def test_backprop_through_resnet_matches_autograd(conv):
    torch.manual_seed(4)
    net = _resnet(conv)
    x, y = torch.randn(5, 64), torch.randint(0, 3, (5,))
    Backprop(net).compute_grads(x, y)
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x.view(5, 1, 8, 8)), y).backward()
    for a, b in zip(got, [p.grad for p in net.parameters()], strict=True):
        torch.testing.assert_close(a, b)


def test_backprop_without_error_norms_is_the_same_step():
    torch.manual_seed(4)
    net = _resnet("standard")
    x, y = torch.randn(5, 64), torch.randint(0, 3, (5,))
    reported = Backprop(net).compute_grads(x, y)
    want = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    plain = Backprop(net, error_norms=False)
    for _ in range(2):  # no zero_grad in between: the directions add into .grad
        stats = plain.compute_grads(x, y)
    for a, b in zip(want, [p.grad for p in net.parameters()], strict=True):
        torch.testing.assert_close(2 * a, b)
    torch.testing.assert_close(stats.loss, reported.loss)
    assert not stats.error_norms and set(reported.error_norms) == set(range(1, net.num_layers + 1))
    assert stats.depth == reported.depth and not stats.loss.requires_grad


@pytest.mark.parametrize("model", ["resnet18", "cnn", "mlp-resnet"])
def test_fa_with_true_weights_equals_backprop_on_conv_and_residual_models(model):
    """FA's generic input VJP (shortcuts, batch-norm, pooling) is backprop when B = W."""
    torch.manual_seed(5)
    net = _small(model)
    fa = FA(net)
    for key in fa.B:
        ell, pname = key.split(":")
        fa.B[key].copy_(net.layer(int(ell)).get_parameter(pname.replace("/", ".")).detach())
    x, y = torch.randn(5, 64), torch.randint(0, 3, (5,))
    fa.compute_grads(x, y)
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    Backprop(net).compute_grads(x, y)
    for a, b in zip(got, [p.grad for p in net.parameters()], strict=True):
        torch.testing.assert_close(a, b)


def test_batch_norm_statistics_update_once_per_step():
    torch.manual_seed(6)
    net = _resnet()
    bn = net.layer(1).op.bn
    rule = RecLRA(net, pathway="blocks")
    rule.compute_grads(torch.randn(5, 64), torch.randint(0, 3, (5,)))
    assert int(bn.num_batches_tracked) == 1


def test_conv_synapses_inside_blocks():
    net = _resnet()
    rule = RecLRA(net, pathway="blocks", e_kernel=3)
    shapes = {k: tuple(v.shape) for k, v in rule.E.items()}
    assert shapes["3->2"] == (4, 4, 3, 3)  # block output → support: a 3×3 conv synapse
    assert shapes[f"{net.num_layers}->3"] == (4, 1, 3)  # output → block: a channel synapse
    dense = RecLRA(net, pathway="blocks", e_to_maps="dense")
    assert tuple(dense.E[f"{net.num_layers}->3"].shape) == (4 * 8 * 8, 3)
    chain = RecLRA(net, pathway="chain")
    assert tuple(chain.E["4->3"].shape) == (8, 4, 3, 3)  # stride-2 boundary: transposed conv


@pytest.mark.parametrize("rule_name", ["rec-lra", "rec-lra-bp", "backprop", "fa", "dfa", "lra"])
@pytest.mark.parametrize("conv", ["standard", "pseudo"])
def test_every_rule_trains_the_resnet(rule_name, conv):
    torch.manual_seed(7)
    net = _resnet(conv)
    opts = {"pathway": "blocks"} if rule_name == "rec-lra" else {}
    rule = build_rule(rule_name, net, **opts)
    rule.compute_grads(torch.randn(4, 64), torch.randint(0, 3, (4,)))
    grads = [p.grad for p in rule.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_rec_lra_bp_backprops_inside_blocks():
    """Mixed mode: the support layer's update is the gradient of the block's local loss."""
    torch.manual_seed(8)
    net = build_model("mlp-resnet", input_shape=(6,), num_classes=3, width=5, blocks=1)
    rule = build_rule("rec-lra-bp", net, beta=0.3)
    assert set(rule.pathway.edges) == {(4, 3), (4, 1)}
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    rule.compute_grads(x, y)
    with torch.no_grad():
        t = net.trace(x)
        e4 = torch.softmax(t.logits, 1) - torch.nn.functional.one_hot(y, 3)
        e3 = t.z[3] - torch.tanh(t.h[3] - 0.3 * e4 @ rule.E["4->3"].t())
    W2 = net.layer(2).op.weight.detach().clone().requires_grad_(True)
    z1 = t.out[1]
    z2 = torch.tanh(torch.nn.functional.linear(z1, W2, net.layer(2).op.bias))
    z3 = torch.tanh(net.layer(3).op(z2) + z1)
    (want,) = torch.autograd.grad((z3 * e3).sum() / 4, W2)
    torch.testing.assert_close(net.layer(2).op.weight.grad, want)


@pytest.mark.parametrize("rule_name", ["lra", "lra-diff"])
@pytest.mark.parametrize("model", ["cnn", "resnet18", "mlp-resnet"])
def test_lra_walks_the_chain_of_conv_and_residual_models(rule_name, model):
    torch.manual_seed(10)
    net = _small(model)
    rule = build_rule(rule_name, net)
    stats = rule.compute_grads(torch.randn(4, 64), torch.randint(0, 3, (4,)))
    assert stats.depth == net.num_layers
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_default_pathway_is_blocks_on_residual_models_and_skip_otherwise():
    res = _resnet()
    assert RecLRA(res).pathway.edges == RecLRA(res, pathway="blocks").pathway.edges
    mlp = build_model("mlp", input_shape=(6,), num_classes=3, hidden=[4, 4])
    assert RecLRA(mlp).pathway.depth == 1


@pytest.mark.parametrize(("stride", "kernel"), [(2, 3), (1, 3), (1, 5), (1, 1)])
def test_conv_synapse_transmits_and_learns_like_its_operator(stride, kernel):
    """A conv error synapse: d = conv_transpose(e_j, E, stride r); its update is the VJP of that
    operator w.r.t. E, with or without the graph recorded at transmission."""
    from torch import nn

    from reclra.synapses import synapse_grad, synapse_shape, transmit

    torch.manual_seed(9)
    size = 4 * stride
    assert synapse_shape((4, 4, 4), (3, size, size), kernel) == (4, 3, kernel, kernel)
    E = nn.Parameter(torch.randn(4, 3, kernel, kernel))
    e_j, cot = torch.randn(2, 4, 4, 4), torch.randn(2, 3, size, size)
    d = transmit(E, e_j, (3, size, size), record=True)
    want_d = torch.nn.functional.conv_transpose2d(
        e_j, E, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )
    torch.testing.assert_close(d.detach(), want_d.flatten(1))
    (want,) = torch.autograd.grad((want_d * cot).sum() / 2, E)
    torch.testing.assert_close(synapse_grad(E, e_j, cot, d=d), want)
    torch.testing.assert_close(synapse_grad(E.detach(), e_j, cot), want)


def test_channel_synapse_broadcasts_over_positions_and_learns_like_its_operator():
    from torch import nn

    from reclra.synapses import synapse_grad, synapse_shape, transmit

    torch.manual_seed(11)
    assert synapse_shape((5,), (3, 4, 4)) == (3, 1, 5)
    assert synapse_shape((5,), (3, 4, 4), channel=False) == (48, 5)
    E = nn.Parameter(torch.randn(3, 1, 5))
    e_j, cot = torch.randn(2, 5), torch.randn(2, 3, 4, 4)
    d = transmit(E, e_j, (3, 4, 4)).view(2, 3, 4, 4)
    want_d = (e_j @ E[:, 0, :].t())[:, :, None, None].expand(2, 3, 4, 4)
    torch.testing.assert_close(d, want_d)
    (want,) = torch.autograd.grad((want_d * cot).sum() / 2, E)
    torch.testing.assert_close(synapse_grad(E.detach(), e_j, cot), want)


def test_recalibrate_norms_gives_the_plain_average_of_batch_statistics():
    torch.manual_seed(0)
    net = build_model("resnet18", input_shape=(1, 6, 6), num_classes=3, width=2, stages=(1,))
    batches = [torch.randn(4, 1, 6, 6) + k for k in range(3)]
    stem_bn = net.layer(1).op.bn
    weights = {n: p.clone() for n, p in net.named_parameters()}
    net.eval()
    rng = torch.random.get_rng_state()
    assert net.recalibrate_norms(iter(batches)) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()
    )
    with torch.no_grad():  # the stem's own batch means, averaged over the three batches
        means = [net.layer(1).op.conv(x).mean(dim=(0, 2, 3)) for x in batches]
    torch.testing.assert_close(stem_bn.running_mean, torch.stack(means).mean(0))
    assert stem_bn.num_batches_tracked == 3 and stem_bn.momentum == 0.1
    assert not net.training and torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(p, weights[n]) for n, p in net.named_parameters())
    assert build_model("mlp", input_shape=(4,), num_classes=2).recalibrate_norms([]) == 0
