"""reclra.convert.from_module: a user's nn.Module as a LayeredNet with the module's own weights."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reclra.activations import ACTIVATIONS
from reclra.convert import from_module
from reclra.layers import Layer
from reclra.models import MLP
from reclra.network import Block, LayeredNet
from reclra.rules import build_rule

LOCAL_RULES = ("rec-lra", "lra", "fa", "dfa")


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Tiny ops on a busy machine: one thread."""


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.Tanh(),
        nn.Linear(256, 256),
        nn.Tanh(),
        nn.Linear(256, 10),
    )


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # (4, 4, 4)
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(96, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """Stem conv + relu, an identity block, a stride-2 projection block, global pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block1 = BasicBlock(4, 4, 1)
        self.block2 = BasicBlock(4, 8, 2)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))  # (B, 4, 8, 8)
        x = self.block2(self.block1(x))  # (B, 8, 4, 4)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


MODELS = {
    "mlp": (mlp, (1, 28, 28)),
    "cnn": (cnn, (1, 8, 8)),
    "resnet": (TinyResNet, (1, 8, 8)),
}


def make(name: str, batch: int = 6) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    build, shape = MODELS[name]
    return build(), torch.randn(batch, *shape), torch.randint(0, 10, (batch,))


@pytest.mark.parametrize("name", MODELS)
def test_same_logits_and_own_weights(name: str) -> None:
    module, x, _ = make(name)
    net = from_module(module, x)
    assert isinstance(net, LayeredNet)
    assert net.input_shape == x.shape[1:]
    assert net.layer(net.num_layers).activation is ACTIVATIONS["softmax"]
    # the parameters and buffers are the module's own objects
    assert {id(p) for p in net.parameters()} == {id(p) for p in module.parameters()}
    own = {b.data_ptr() for b in module.buffers()}
    assert {b.data_ptr() for b in net.buffers()} == own
    with torch.no_grad():
        module.eval(), net.eval()
        assert torch.equal(net(x), module(x))
        assert torch.equal(net.trace(x).logits, module(x))
        # train mode: batch statistics, and the running statistics evolve identically
        reference = copy.deepcopy(module).train()
        net.train()
        for batch in (x, 2 * x + 1):
            assert torch.equal(net(batch), reference(batch))
        state = module.state_dict()
        for key, value in reference.state_dict().items():
            assert torch.equal(state[key], value), key
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert int(m.num_batches_tracked) == 2


def test_conversion_leaves_statistics_and_training_flags() -> None:
    module, x, _ = make("cnn")
    module.train()
    module[1].eval()  # a frozen batch-norm stays frozen
    before = copy.deepcopy(module.state_dict())
    net = from_module(module, x)
    assert module.training and not module[1].training and module[5].training
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert net.training and net.layer(1).op.training  # the wrappers follow the module


def test_operators_and_shapes() -> None:
    module, x, _ = make("mlp")
    net = from_module(module, x)
    assert [layer.op for layer in net.layers] == [module[1], module[3], module[5]]
    assert all(layer.is_dense for layer in net.layers)  # the user's nn.Linear: GEMM fast path
    assert [layer.activation.name for layer in net.layers] == ["tanh", "tanh", "softmax"]
    module, x, _ = make("cnn")
    net = from_module(module, x)
    assert [layer.out_shape for layer in net.layers] == [(4, 8, 8), (6, 4, 4), (16,), (10,)]
    assert [layer.is_dense for layer in net.layers] == [False, False, False, True]


def test_rec_lra_directions_equal_builtin_mlp() -> None:
    module, x, y = make("mlp")
    net = from_module(module, x)
    builtin = MLP([784, 256, 256, 10], "tanh")
    with torch.no_grad():
        for ours, theirs in zip(net.layers, builtin.layers, strict=True):
            theirs.op.weight.copy_(ours.op.weight)
            theirs.op.bias.copy_(ours.op.bias)
    torch.manual_seed(1)
    rule = build_rule("rec-lra", net)
    torch.manual_seed(1)
    reference = build_rule("rec-lra", builtin)
    state, ref_state = rule.state_dict(), reference.state_dict()  # weights and synapses E
    assert list(state) == list(ref_state)
    for key, value in state.items():
        assert torch.equal(value, ref_state[key]), key
    stats = rule.compute_grads(x, y)
    ref_stats = reference.compute_grads(x, y)
    assert torch.equal(stats.loss, ref_stats.loss)
    for ours, theirs in zip(rule.parameters(), reference.parameters(), strict=True):
        assert ours.grad is not None and torch.equal(ours.grad, theirs.grad)


@pytest.mark.parametrize("rule_name", LOCAL_RULES)
@pytest.mark.parametrize("name", MODELS)
def test_rules_give_directions_for_every_parameter(name: str, rule_name: str) -> None:
    module, x, y = make(name)
    net = from_module(module, x)
    rule = build_rule(rule_name, net)
    rule.compute_grads(x, y)
    for pname, p in module.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_training_the_net_trains_the_module() -> None:
    module, x, y = make("resnet")
    net = from_module(module, x)
    rule = build_rule("rec-lra", net)
    opt = torch.optim.SGD(rule.parameters(), lr=0.1)
    before = copy.deepcopy(module.state_dict())
    opt.zero_grad()
    rule.compute_grads(x, y)
    opt.step()
    for pname, p in module.named_parameters():
        assert not torch.equal(p, before[pname]), pname
    with torch.no_grad():
        net.eval(), module.eval()
        assert torch.equal(net(x), module(x))


def test_residual_blocks_found() -> None:
    module, x, y = make("resnet")
    net = from_module(module, x)
    # 1 stem, 2–3 identity block, 4–5 projection block, 6 head
    assert net.blocks == (Block(output=3, support=(2,)), Block(output=5, support=(4,)))
    assert [layer.skip_from for layer in net.layers] == [None, None, 1, None, 3, None]
    assert isinstance(net.layer(3).shortcut, nn.Identity)
    shortcut = module.block2.shortcut
    assert {id(p) for p in net.layer(5).shortcut.parameters()} == {
        id(p) for p in shortcut.parameters()
    }
    assert net.layer(5).out_shape == (8, 4, 4)
    rule = build_rule("rec-lra", net, pathway="blocks")
    assert rule.pathway.depth == 2
    rule.compute_grads(x, y)
    assert all(p.grad is not None for p in module.parameters())


def test_residual_from_the_input_reshapes_it() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.tanh(x + self.conv2(torch.tanh(self.conv1(x))))
            return self.head(out.flatten(1))

    module, x = Net(), torch.randn(4, 1, 4, 4)
    net = from_module(module, x)
    assert net.layer(2).skip_from == 0 and net.blocks == (Block(output=2, support=(1,)),)
    with torch.no_grad():
        assert torch.equal(net(x), module(x))


class TorchvisionBlock(nn.Module):
    """torchvision's BasicBlock: one in-place ReLU module used twice, ``out += identity``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def test_torchvision_style_resnet() -> None:
    """The max-pooled stem output feeds a block's first conv and its identity shortcut: the
    pooling is recomputed in both (it has no state); ``x.view(x.size(0), -1)`` before the head."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
            self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(2)
            self.layer1 = nn.Sequential(TorchvisionBlock(4, 4, 1), TorchvisionBlock(4, 8, 2))
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 4, 4, 4)
            x = self.avgpool(self.layer1(x))
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(0)
    module, x, y = Net(), torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    net = from_module(module, x)
    assert net.blocks == (Block(output=3, support=(2,)), Block(output=5, support=(4,)))
    reference = copy.deepcopy(module)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))  # train mode
        net.eval(), reference.eval()
        assert torch.equal(net(x), reference(x))
    # backprop through the converted net is autograd through the module
    expected = torch.autograd.grad(F.cross_entropy(reference(x), y), list(reference.parameters()))
    build_rule("backprop", net).compute_grads(x, y)
    for p, g in zip(module.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def test_activation_forms() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.ModuleList(nn.Linear(5, 5) for _ in range(6))
            self.act = nn.LeakyReLU(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.fc[0](x), inplace=True)
            x = self.act(self.fc[1](x))
            x = self.fc[2](x).tanh()
            x = F.elu(self.fc[3](x))
            x = nn.functional.gelu(self.fc[4](x), approximate="tanh")
            return self.fc[5](x)

    module, x = Net(), torch.randn(4, 5)
    net = from_module(module, x)
    acts = [layer.activation for layer in net.layers]
    assert acts[0] is ACTIVATIONS["relu"] and acts[0].f is torch.relu  # never in place
    assert acts[1].name == "leaky_relu(negative_slope=0.2)"
    assert acts[2] is ACTIVATIONS["tanh"] and acts[3] is ACTIVATIONS["elu"]
    assert acts[4].name == "gelu(approximate='tanh')"
    with torch.no_grad():
        assert torch.equal(net(x), module(x))


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.fc1(x))
        b = torch.relu(self.fc2(a))
        return self.head(torch.cat([a, b], dim=1))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            return self.fc(x)
        return -self.fc(x)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2)), r"node '_1'.*PReLU"),
        (nn.Sequential(nn.Linear(4, 4), nn.RReLU(), nn.Linear(4, 2)), r"node '_1'.*RReLU"),
        (nn.Sequential(nn.Linear(4, 4), nn.Softmax(1), nn.Linear(4, 2)), r"not elementwise"),
        (Branches(), r"node 'cat' \(call_function torch.cat\).*cannot map"),
        (Untraceable(), r"torch.fx could not trace Untraceable"),
        (nn.Sequential(nn.Linear(4, 2), nn.LogSoftmax(1)), r"return the logits"),
        (nn.Sequential(nn.Linear(4, 4), nn.Tanh()), r"output must be the logits"),
        (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 2)), "dropout"),
    ],
    ids=["prelu", "rrelu", "softmax", "cat", "untraceable", "log-softmax-out", "act-out", "drop"],
)
def test_refusals_name_the_node(module: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_module(module, torch.randn(4, 4))


def test_refuses_a_layer_reading_an_older_representation() -> None:
    class Parallel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = torch.relu(self.fc1(x)), torch.relu(self.fc2(x))
            return self.head(a * b)

    with pytest.raises(ValueError, match=r"node 'fc2'.*reads representation 0"):
        from_module(Parallel(), torch.randn(4, 4))


def test_converted_layers_are_plain_layers() -> None:
    module, x, _ = make("resnet")
    net = from_module(module, x)
    assert all(isinstance(layer, Layer) for layer in net.layers)
    clone = copy.deepcopy(net)  # checkpoints / copies work on the converted operators
    with torch.no_grad():
        net.eval(), clone.eval()
        assert torch.equal(clone(x), net(x))


def test_readme_from_module_snippet_runs():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Your own model", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md (Your own model)", "exec"), {})
