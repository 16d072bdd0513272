"""Convert a user's ``nn.Module`` into a :class:`~reclra.network.LayeredNet` every rule can train.

:func:`from_module` traces the module with ``torch.fx`` and cuts the graph into representation
points at its activations: representation ``0`` is the input, representation ``k`` the output
``z_k = φ_k(h_k)`` of the ``k``-th activation (an activation module such as ``nn.ReLU``, a function
such as ``torch.tanh`` / ``F.leaky_relu``, or a method such as ``x.relu()``). Layer ``k``'s operator
is the subgraph computing ``h_k`` from ``z*_{k−1}``: everything between two activations (linear,
conv, batch-norm, pooling, flatten, reshapes, arithmetic) is that layer's operator. The module's
output is the logits ``h_L``; the output layer's activation is the softmax.

Converted:

- an ``nn.Sequential``, or any module ``torch.fx.symbolic_trace`` can trace, of one input;
- residual additions: ``h_k = a + b`` (``+``, ``+=``, ``torch.add``, ``Tensor.add``) with ``a``
  computed from ``z*_{k−1}`` and ``b`` from a single earlier representation ``z*_j``
  (``b = z*_j`` itself, or a projection of it) becomes a layer with ``skip_from=j`` and
  ``shortcut = b``'s subgraph, and a :class:`~reclra.network.Block` (output ``k``, support
  ``j+1 … k−1``) for the ``blocks`` error pathway;
- elementwise, parameter-free, deterministic activations: relu, tanh, sigmoid, leaky-relu, elu,
  relu6, softplus, softsign, hardtanh (reclra's registered activations when their arguments are
  reclra's), and gelu, silu, mish, hardswish, hardsigmoid, selu, celu, logsigmoid, tanhshrink,
  softshrink, hardshrink, threshold (with the module's own arguments). In-place forms
  (``inplace=True``, ``relu_``) are replayed out of place.

The operators share the module's submodules (``torch.fx.GraphModule`` references them, it does not
copy them): the converted net's parameters and buffers *are* the module's, so training the net
trains the module, and the logits are the module's. A layer whose operator is a single
``nn.Linear`` (after an optional flatten) on a flat input uses that ``nn.Linear`` itself, so the
dense fast paths apply.

Refused with a ``ValueError`` naming the ``torch.fx`` node:

- a module ``torch.fx`` cannot trace (data-dependent control flow, …), or of several inputs;
- activations that are not elementwise (softmax, log-softmax, softmin, GLU in the middle), have
  parameters (PReLU) or sample (RReLU); a module whose output is a softmax / log-softmax (return
  the logits) or an activation;
- dropout with ``p > 0`` and random sampling inside an operator (a layer's replay must be
  deterministic);
- a branch the layer structure cannot express: a layer reading a representation other than the
  previous one (other than through a residual addition), combining two representations
  otherwise (``torch.cat``, ``*``, a size ``b = x.size(0)`` taken once and used in later layers),
  a value computed with parameters or buffers that two layers' operators use, an in-place update
  whose result is not used or whose input is read again. A parameter-free value two layers need (the
  max-pooled stem output that feeds both a block's first convolution and its identity shortcut)
  is recomputed in each.
"""

from __future__ import annotations

import functools
import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from reclra.activations import ACTIVATIONS, Activation
from reclra.layers import Layer
from reclra.network import Block, LayeredNet

__all__ = ["from_module"]


# --- activations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ActKind:
    """One kind of activation: its out-of-place function and its arguments after the input.

    ``params`` lists ``(name, default)`` in positional order (the functional form's order; an
    ``inplace`` flag may follow); ``registered`` says that reclra's registered activation ``name``
    is ``fn`` with these defaults.
    """

    name: str
    fn: Callable[..., Tensor]
    params: tuple[tuple[str, Any], ...] = ()
    registered: bool = False


_REQUIRED = object()  # a parameter without a default (nn.Threshold's threshold and value)

_KINDS = {
    k.name: k
    for k in [
        _ActKind("relu", torch.relu, registered=True),
        _ActKind("tanh", torch.tanh, registered=True),
        _ActKind("sigmoid", torch.sigmoid, registered=True),
        _ActKind("leaky_relu", F.leaky_relu, (("negative_slope", 0.01),), registered=True),
        _ActKind("elu", F.elu, (("alpha", 1.0),), registered=True),
        _ActKind("relu6", F.relu6, registered=True),
        _ActKind("softplus", F.softplus, (("beta", 1.0), ("threshold", 20.0)), registered=True),
        _ActKind("softsign", F.softsign, registered=True),
        _ActKind("hardtanh", F.hardtanh, (("min_val", -1.0), ("max_val", 1.0)), registered=True),
        _ActKind("gelu", F.gelu, (("approximate", "none"),)),
        _ActKind("silu", F.silu),
        _ActKind("mish", F.mish),
        _ActKind("hardswish", F.hardswish),
        _ActKind("hardsigmoid", F.hardsigmoid),
        _ActKind("selu", F.selu),
        _ActKind("celu", F.celu, (("alpha", 1.0),)),
        _ActKind("logsigmoid", F.logsigmoid),
        _ActKind("tanhshrink", F.tanhshrink),
        _ActKind("softshrink", F.softshrink, (("lambd", 0.5),)),
        _ActKind("hardshrink", F.hardshrink, (("lambd", 0.5),)),
        _ActKind("threshold", F.threshold, (("threshold", _REQUIRED), ("value", _REQUIRED))),
    ]
}

# exact types: a subclass may change forward (nn.ReLU6 is an nn.Hardtanh)
_ACT_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.LeakyReLU: "leaky_relu",
    nn.ELU: "elu", nn.ReLU6: "relu6", nn.Softplus: "softplus", nn.Softsign: "softsign",
    nn.Hardtanh: "hardtanh", nn.GELU: "gelu", nn.SiLU: "silu", nn.Mish: "mish",
    nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.SELU: "selu", nn.CELU: "celu",
    nn.LogSigmoid: "logsigmoid", nn.Tanhshrink: "tanhshrink", nn.Softshrink: "softshrink",
    nn.Hardshrink: "hardshrink", nn.Threshold: "threshold",
}  # fmt: skip

_ACT_FUNCTIONS: dict[Callable[..., Any], str] = {
    torch.relu: "relu", torch.relu_: "relu", F.relu: "relu",
    torch.tanh: "tanh", torch.tanh_: "tanh", F.tanh: "tanh",
    torch.sigmoid: "sigmoid", torch.sigmoid_: "sigmoid", F.sigmoid: "sigmoid",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu",
    F.elu: "elu", F.elu_: "elu", F.relu6: "relu6", F.softplus: "softplus",
    F.softsign: "softsign", F.hardtanh: "hardtanh", F.hardtanh_: "hardtanh", F.gelu: "gelu",
    F.silu: "silu", F.mish: "mish", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid",
    F.selu: "selu", torch.selu: "selu", F.celu: "celu", F.logsigmoid: "logsigmoid",
    F.tanhshrink: "tanhshrink", F.softshrink: "softshrink", F.hardshrink: "hardshrink",
    F.threshold: "threshold",
}  # fmt: skip

_ACT_METHODS = {
    "relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
    "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
}  # fmt: skip

_NOT_ELEMENTWISE = "is not elementwise (an activation must act on each unit alone)"
_REFUSED_MODULES: dict[type, str] = {
    nn.PReLU: "has learnable parameters (an activation must be parameter-free)",
    nn.RReLU: "samples its slope (an activation must be deterministic)",
    nn.Softmax: _NOT_ELEMENTWISE,
    nn.LogSoftmax: _NOT_ELEMENTWISE,
    nn.Softmin: _NOT_ELEMENTWISE,
    nn.Softmax2d: _NOT_ELEMENTWISE,
    nn.GLU: _NOT_ELEMENTWISE,
}
_REFUSED_FUNCTIONS: dict[Callable[..., Any], str] = {
    F.prelu: _REFUSED_MODULES[nn.PReLU],
    F.rrelu: _REFUSED_MODULES[nn.RReLU],
    F.rrelu_: _REFUSED_MODULES[nn.RReLU],
    torch.softmax: _NOT_ELEMENTWISE,
    F.softmax: _NOT_ELEMENTWISE,
    torch.log_softmax: _NOT_ELEMENTWISE,
    F.log_softmax: _NOT_ELEMENTWISE,
    F.softmin: _NOT_ELEMENTWISE,
    F.glu: _NOT_ELEMENTWISE,
}
_REFUSED_METHODS = {"softmax": _NOT_ELEMENTWISE, "log_softmax": _NOT_ELEMENTWISE}
_SOFTMAXES = {nn.Softmax, nn.LogSoftmax, torch.softmax, F.softmax, torch.log_softmax}
_SOFTMAXES |= {F.log_softmax, "softmax", "log_softmax"}

_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_DROPOUT_MODULES += (nn.FeatureAlphaDropout,)
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
_DROPOUT_FUNCTIONS |= {F.feature_alpha_dropout, torch.dropout}
_RANDOM_FUNCTIONS = {torch.rand, torch.rand_like, torch.randn, torch.randn_like, torch.randint}
_RANDOM_FUNCTIONS |= {torch.randint_like, torch.bernoulli, torch.multinomial, torch.normal}
_RANDOM_FUNCTIONS |= {torch.poisson, torch.randperm}
_RANDOM_METHODS = {"bernoulli", "bernoulli_", "normal_", "uniform_", "random_", "exponential_"}
_RANDOM_METHODS |= {"geometric_", "cauchy_", "log_normal_", "multinomial"}

_FLATTENS = {torch.flatten, torch.reshape, "flatten", "view", "reshape"}
_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
_INPLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, operator.ifloordiv: operator.floordiv,
    operator.imod: operator.mod, operator.ipow: operator.pow, operator.imatmul: operator.matmul,
    operator.iand: operator.and_, operator.ior: operator.or_, operator.ixor: operator.xor,
}  # fmt: skip


# --- reporting --------------------------------------------------------------------------------


def _target_name(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"self.{node.target} = {type(gm.get_submodule(str(node.target))).__name__}"
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_function":
        t = node.target
        module = getattr(t, "__module__", None) or "torch"
        return f"{module.removeprefix('_')}.{getattr(t, '__name__', repr(t))}"
    return str(node.target)


def _where(node: fx.Node) -> str:
    """The user's source line that made ``node`` (from the trace's stack), or ``""``."""
    lines = (node.stack_trace or "").splitlines()
    torch_dir = os.path.dirname(torch.__file__)
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if line.startswith("File ") and torch_dir not in line:
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            where = line.removeprefix("File ").replace('"', "")
            return f" at {where}: `{code}`" if code else f" at {where}"
    return ""


class _Refusal:
    """Builds the ``ValueError`` of a refused node: ``cannot convert M: node 'x' (…) <why>``."""

    def __init__(self, module: nn.Module, gm: fx.GraphModule) -> None:
        self.module_name, self.gm = type(module).__name__, gm

    def describe(self, node: fx.Node) -> str:
        return f"node {node.name!r} ({node.op} {_target_name(self.gm, node)})"

    def __call__(self, node: fx.Node, why: str) -> ValueError:
        return ValueError(
            f"cannot convert {self.module_name}: {self.describe(node)}{_where(node)} {why}"
        )


# --- tracing and shapes -----------------------------------------------------------------------


def _trace(module: nn.Module) -> fx.GraphModule:
    tracer = fx.Tracer()
    tracer.record_stack_traces = True  # refusals quote the user's source line
    try:
        graph = tracer.trace(module)
    except Exception as exc:  # fx raises TraceError, TypeError, AttributeError, …
        raise ValueError(
            f"torch.fx could not trace {type(module).__name__}: {exc}. from_module converts an "
            f"nn.Sequential or a module torch.fx.symbolic_trace can trace (no control flow on "
            f"tensor values)"
        ) from exc
    return fx.GraphModule(tracer.root, graph, type(module).__name__)


def _propagate_shapes(gm: fx.GraphModule, module: nn.Module, example_input: Tensor) -> None:
    """Record every node's shape (``node.meta["tensor_meta"]``) on ``example_input``, in eval mode
    so that batch-norm running statistics are not changed; training flags are restored."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input.detach().clone())
    except Exception as exc:  # whatever the module raises on this input
        cause = exc
        while cause.__cause__ is not None:  # ShapeProp wraps the module's own error
            cause = cause.__cause__
        raise ValueError(
            f"running {type(module).__name__} on example_input of shape "
            f"{tuple(example_input.shape)} failed: {type(cause).__name__}: {cause}"
        ) from exc
    finally:
        for m, training in flags:
            m.training = training


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


# --- the converter ----------------------------------------------------------------------------


@dataclass
class _Part:
    """A subgraph: the nodes computing ``root`` from representation ``rep`` (graph order)."""

    rep: int
    root: fx.Node
    nodes: list[fx.Node]


class _Converter:
    def __init__(self, module: nn.Module, example_input: Tensor) -> None:
        self.module = module
        self.gm = gm = _trace(module)
        self.refuse = _Refusal(module, gm)
        self.batch = example_input.shape[0]
        self.nodes = list(gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        inputs = [n for n in self.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            names = ", ".join(n.name for n in inputs)
            raise ValueError(
                f"cannot convert {type(module).__name__}: its forward takes {len(inputs)} inputs "
                f"({names}); from_module converts modules of one input"
            )
        _propagate_shapes(gm, module, example_input)
        self.reps: list[fx.Node] = [inputs[0]]  # representation points, input first
        self.acts: list[Activation] = []  # φ_k of representation k ≥ 1
        self.index: dict[fx.Node, int] = {inputs[0]: 0}
        # per node: the representations its value is computed from, not crossing another one
        self.reads: dict[fx.Node, frozenset[int]] = {inputs[0]: frozenset({0})}
        self.free: set[fx.Node] = set()  # values of parameters and constants only
        self._scan()

    # .. pass 1: representations, reads, refusals of single nodes

    def _scan(self) -> None:
        for node in self.nodes:
            if node.op in ("placeholder", "output"):
                continue
            reads = frozenset().union(*(self.reads[a] for a in node.all_input_nodes))
            self.reads[node] = reads
            if not reads:  # computed from parameters / constants only
                if node.op != "call_module" and all(a in self.free for a in node.all_input_nodes):
                    self.free.add(node)
                continue
            self._refuse_stochastic(node)
            act = self._activation(node)
            if act is not None:
                self.index[node] = len(self.reps)
                self.reps.append(node)
                self.acts.append(act)
                self.reads[node] = frozenset({self.index[node]})
            self._check_inplace(node)

    def _refuse_stochastic(self, node: fx.Node) -> None:
        why = "samples at random; the operators between activations must be deterministic"
        if node.op == "call_module":
            mod = self.gm.get_submodule(str(node.target))
            if isinstance(mod, _DROPOUT_MODULES) and mod.p > 0:
                raise self.refuse(
                    node,
                    "is dropout inside a layer's operator; replaying a layer must be "
                    "deterministic, so remove it (or use p=0)",
                )
        elif node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
            args = dict(zip(("input", "p", "training"), node.args, strict=False)) | node.kwargs
            if args.get("p", 0.5) > 0 and args.get("training", args.get("train", True)):
                raise self.refuse(
                    node, "is dropout inside a layer's operator; replaying a layer must be "
                    "deterministic, so remove it",
                )  # fmt: skip
        elif (node.op == "call_function" and node.target in _RANDOM_FUNCTIONS) or (
            node.op == "call_method" and node.target in _RANDOM_METHODS
        ):
            raise self.refuse(node, why)

    def _activation(self, node: fx.Node) -> Activation | None:
        """The activation ``node`` applies, ``None`` if it is none; refuses unsupported ones."""
        target = node.target
        if node.op == "call_module":
            mod = self.gm.get_submodule(str(target))
            kind_name = _ACT_MODULES.get(type(mod))
            refused = _REFUSED_MODULES.get(type(mod))
            key: Any = type(mod)
        elif node.op == "call_function":
            kind_name = _ACT_FUNCTIONS.get(target)  # type: ignore[arg-type]
            refused = _REFUSED_FUNCTIONS.get(target)  # type: ignore[arg-type]
            key = target
        elif node.op == "call_method":
            kind_name = _ACT_METHODS.get(str(target))
            refused = _REFUSED_METHODS.get(str(target))
            key = target
        else:
            return None
        if refused is not None:
            if key in _SOFTMAXES and [u.op for u in node.users] == ["output"]:
                raise self.refuse(
                    node,
                    "is the module's output: return the logits (the rules apply the softmax "
                    "of the output layer themselves)",
                )
            raise self.refuse(node, f"{refused}; unsupported activation")
        if kind_name is None:
            return None
        kind = _KINDS[kind_name]
        if node.op == "call_module":
            values = {p: getattr(mod, p) for p, _ in kind.params}
        else:
            values = self._bind(node, kind)
        return _make_activation(kind, values)

    def _bind(self, node: fx.Node, kind: _ActKind) -> dict[str, Any]:
        """Arguments of an activation call after its input, by name (defaults filled in)."""
        names = [p for p, _ in kind.params] + ["inplace"]
        if not node.args or not isinstance(node.args[0], fx.Node):
            raise self.refuse(node, "has no tensor input")
        values = dict(zip(names, node.args[1:], strict=False))
        for name, value in node.kwargs.items():
            if name not in names or name in values:
                raise self.refuse(
                    node, f"has an argument {name}={value!r} the converter cannot map"
                )
            values[name] = value
        if len(node.args) - 1 > len(names):
            raise self.refuse(node, "has more arguments than the converter can map")
        values.pop("inplace", None)  # replayed out of place
        for name, default in kind.params:
            values.setdefault(name, default)
            if values[name] is _REQUIRED:
                raise self.refuse(node, f"needs its argument {name}")
            if isinstance(values[name], fx.Node):
                raise self.refuse(node, f"has a computed argument {name} (it must be a constant)")
        return values

    def _check_inplace(self, node: fx.Node) -> None:
        """An in-place update traced by fx is sound only if its result is what is used next."""
        if not _is_inplace(self.gm, node):
            return
        if not node.users:
            raise self.refuse(
                node,
                "updates a tensor in place and its result is not used; write it out of place "
                "(e.g. `out = out.relu()`) so the traced graph shows the data flow",
            )
        mutated = node.args[0] if node.args else None
        if isinstance(mutated, fx.Node):
            later = [u for u in mutated.users if self.order[u] > self.order[node]]
            if later:
                raise self.refuse(
                    node,
                    f"updates {mutated.name!r} in place, which {later[0].name!r} reads "
                    f"afterwards; write it out of place",
                )

    # .. pass 2: cutting the graph into layers

    def layers(self) -> tuple[list[Layer], tuple[Block, ...]]:
        output = self.nodes[-1]
        logits = output.args[0]
        if not isinstance(logits, fx.Node) or _shape(logits) is None:
            raise ValueError(
                f"cannot convert {type(self.module).__name__}: its output is not one tensor "
                f"(got {logits!r}); from_module needs a module that returns the logits"
            )
        if logits in self.index:
            raise self.refuse(
                logits,
                "is the module's output; the output must be the logits (the last operator's "
                "output, before any activation)",
            )
        shape = _shape(logits)
        assert shape is not None
        if len(shape) != 2 or shape[0] != self.batch:
            raise self.refuse(
                logits,
                f"gives the module's output of shape {shape}; logits of shape "
                f"(batch={self.batch}, classes) are needed",
            )
        if not self.reads[logits]:
            raise self.refuse(
                logits, "gives the module's output, which does not depend on its input"
            )
        for rep in self.reps[1:]:
            rep_shape = _shape(rep)
            if rep_shape is None or len(rep_shape) < 2 or rep_shape[0] != self.batch:
                raise self.refuse(
                    rep,
                    f"gives a representation of shape {rep_shape}; a representation needs the "
                    f"batch ({self.batch}) as its first dimension and at least one more",
                )
        L = len(self.reps)
        targets = [_act_input(rep) for rep in self.reps[1:]] + [logits]  # h_1 … h_L
        owner: dict[fx.Node, int] = {}
        layers, blocks = [], []
        for k, h in enumerate(targets, start=1):
            op_part, skip_part = self._split(k, h)
            for part in (op_part, skip_part):
                for n in [] if part is None else part.nodes:
                    if self._stateless(n):  # recomputed by every layer that needs it
                        continue
                    if n in owner:
                        raise self.refuse(
                            n,
                            f"computes, with parameters or buffers, a value the operators of "
                            f"both layer {owner[n]} and layer {k} use; each layer must compute "
                            f"its own (the converter cannot map this branch)",
                        )
                    owner[n] = k
            activation = "softmax" if k == L else self.acts[k - 1]
            out_shape = _shape(h)
            assert out_shape is not None
            op = self._operator(op_part, k)
            if skip_part is None:
                layers.append(Layer(op, activation, out_shape=out_shape[1:]))
                continue
            j = skip_part.rep
            shortcut = None
            if skip_part.root is not self.reps[j] or (j == 0 and len(self._rep_shape(0)) > 1):
                shortcut = self._graph_module(skip_part, f"Shortcut{k}")
            layers.append(
                Layer(op, activation, skip_from=j, shortcut=shortcut, out_shape=out_shape[1:])
            )
            blocks.append(Block(output=k, support=tuple(range(j + 1, k))))
        return layers, tuple(blocks)

    def _stateless(self, node: fx.Node) -> bool:
        """A value two layers may each recompute: a function, or a module without parameters
        or buffers (pooling, flatten); random ones are refused before."""
        if node.op != "call_module":
            return True
        mod = self.gm.get_submodule(str(node.target))
        return next(mod.parameters(), None) is None and next(mod.buffers(), None) is None

    def _rep_shape(self, j: int) -> tuple[int, ...]:
        shape = _shape(self.reps[j])
        assert shape is not None
        return shape[1:]

    def _rep_name(self, j: int) -> str:
        return f"{j} ({self.reps[j].name!r})"

    def _split(self, k: int, h: fx.Node) -> tuple[_Part, _Part | None]:
        """Layer ``k``'s operator subgraph (and residual subgraph) computing ``h``."""
        reads = self.reads[h]
        if not reads:
            raise self.refuse(h, f"gives h of layer {k}, which depends on no representation")
        if reads == {k - 1}:
            return self._part(k - 1, h), None
        if _is_add(h):
            a, b = h.args[0], h.args[1]
            if isinstance(a, fx.Node) and isinstance(b, fx.Node):
                ra, rb = self.reads[a], self.reads[b]
                if rb == {k - 1} and len(ra) == 1 and min(ra) < k - 1:
                    a, b, ra, rb = b, a, rb, ra
                if ra == {k - 1} and len(rb) == 1 and min(rb) < k - 1:
                    return self._part(k - 1, a), self._part(min(rb), b)
        node = self._merge_point(h)
        if len(self.reads[node]) == 1:
            (j,) = self.reads[node]
            raise self.refuse(
                node,
                f"reads representation {self._rep_name(j)}, but layer {k} may read only the "
                f"previous representation {self._rep_name(k - 1)} (and an earlier one only "
                f"through a residual addition); the converter cannot map this branch",
            )
        names = ", ".join(self._rep_name(j) for j in sorted(self.reads[node]))
        sizes = [
            a.name
            for a in node.all_input_nodes
            if _shape(a) is None and self.reads[a] and self.reads[a] != {k - 1}
        ]
        hint = (
            f" ({sizes[0]!r} is a size taken from an earlier representation: take it from "
            f"this layer's input, e.g. `x.view(x.size(0), -1)`)"
            if sizes
            else ""
        )
        raise self.refuse(
            node,
            f"combines representations {names} in layer {k}; only a residual addition of a "
            f"term from the previous representation {self._rep_name(k - 1)} and a term from "
            f"one earlier representation can be mapped (the converter cannot map this "
            f"branch){hint}",
        )

    def _merge_point(self, h: fx.Node) -> fx.Node:
        """The first node below ``h`` where values of different representations meet (or ``h``)."""
        node = h
        while True:
            wide = [
                a for a in node.all_input_nodes if a not in self.index and len(self.reads[a]) > 1
            ]
            if not wide:
                return node
            node = wide[0]

    def _part(self, rep: int, root: fx.Node) -> _Part:
        """Every node computing ``root`` from representation ``rep``, in graph order."""
        seen: set[fx.Node] = set()
        stack = [root]
        while stack:
            n = stack.pop()
            if n in seen or n in self.index:
                continue
            seen.add(n)
            stack.extend(n.all_input_nodes)
        return _Part(rep, root, [n for n in self.nodes if n in seen])

    def _operator(self, part: _Part, k: int) -> nn.Module:
        linear = self._as_linear(part)
        if linear is not None:
            return linear
        return self._graph_module(part, f"Layer{k}Op")

    def _graph_module(self, part: _Part, name: str) -> nn.Module:
        rep, in_shape = self.reps[part.rep], self._rep_shape(part.rep)
        return _graph_module(self.module, part, rep, in_shape, name)

    def _as_linear(self, part: _Part) -> nn.Linear | None:
        """The user's ``nn.Linear`` when it is the whole operator on a flat input, else ``None``."""
        root, rep = part.root, self.reps[part.rep]
        if root.op != "call_module" or root.kwargs or len(root.args) != 1:
            return None
        linear = self.gm.get_submodule(str(root.target))
        if not isinstance(linear, nn.Linear):
            return None
        in_shape = self._rep_shape(part.rep)
        if part.rep != 0 and len(in_shape) != 1:  # arrives as (B, C, H, W): not flat
            return None
        x = root.args[0]
        if x is rep:
            return linear if len(in_shape) == 1 else None
        flat = (self.batch, math.prod(in_shape))
        is_flatten = isinstance(x, fx.Node) and (
            (x.op in ("call_function", "call_method") and x.target in _FLATTENS)
            or (x.op == "call_module" and type(self.gm.get_submodule(str(x.target))) is nn.Flatten)
        )
        if not is_flatten or _shape(x) != flat or not x.args or x.args[0] is not rep:
            return None
        # the rest of the subgraph may only compute the flatten's sizes (``x.size(0)``)
        rest = [n for n in part.nodes if n not in (root, x) and n not in self.free]
        if any(_shape(n) is not None for n in rest):
            return None
        return linear


def _graph_module(
    root: nn.Module, part: _Part, rep: fx.Node, in_shape: tuple[int, ...], name: str
) -> nn.Module:
    """``part`` as a module of one input, sharing ``root``'s submodules and parameters.

    The input may arrive flattened (layer 1 reads ``x.flatten(1)``); it is reshaped to the shape
    the module traced, and in-place operations are replayed out of place, so a layer never
    changes the representation it reads.
    """
    graph = fx.Graph()
    z = graph.placeholder("z")
    env = {rep: graph.call_method("reshape", (z, (-1, *in_shape)))}  # (B, *in_shape)
    for node in part.nodes:
        env[node] = new = graph.node_copy(node, lambda a: env[a])
        _out_of_place(new)
    graph.output(env[part.root])
    graph.lint()
    return fx.GraphModule(root, graph, class_name=name)


def _out_of_place(node: fx.Node) -> None:
    if node.op == "call_function" and node.target in _INPLACE_OPERATORS:
        node.target = _INPLACE_OPERATORS[node.target]  # type: ignore[index]
    elif node.op == "call_method" and _method_inplace(str(node.target)):
        node.target = str(node.target)[:-1]
    elif node.op == "call_function" and (name := getattr(node.target, "__name__", "")).endswith(
        "_"
    ):
        for namespace in (torch, F):
            if getattr(namespace, name, None) is node.target and hasattr(namespace, name[:-1]):
                node.target = getattr(namespace, name[:-1])
                break
    if node.kwargs.get("inplace") is True:
        node.kwargs = {**node.kwargs, "inplace": False}


def _method_inplace(name: str) -> bool:
    return (
        name.endswith("_")
        and not name.startswith("_")
        and callable(getattr(Tensor, name[:-1], None))
    )


def _is_inplace(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_module":
        return getattr(gm.get_submodule(str(node.target)), "inplace", False) is True
    if node.op == "call_method":
        return _method_inplace(str(node.target))
    if node.op == "call_function":
        if node.target in _INPLACE_OPERATORS:
            return True
        name = getattr(node.target, "__name__", "")
        return name.endswith("_") and not name.startswith("_")
    return False


def _is_add(node: fx.Node) -> bool:
    if node.op not in ("call_function", "call_method") or node.target not in _ADDS:
        return False
    return len(node.args) == 2 and not node.kwargs  # no alpha, no out


def _act_input(rep: fx.Node) -> fx.Node:
    """``h_k``, the node an activation node applies to."""
    h = rep.args[0]
    assert isinstance(h, fx.Node)
    return h


def _make_activation(kind: _ActKind, values: dict[str, Any]) -> Activation:
    """reclra's registered activation when the arguments are its own; else one with them bound."""
    changed = {p: values[p] for p, default in kind.params if values[p] != default}
    if kind.registered and not changed:
        return ACTIVATIONS[kind.name]
    if not values:
        return Activation(kind.name, kind.fn)
    label = ", ".join(f"{p}={v!r}" for p, v in changed.items())
    name = f"{kind.name}({label})" if label else kind.name
    return Activation(name, functools.partial(kind.fn, **values))


def from_module(module: nn.Module, example_input: Tensor) -> LayeredNet:
    """A :class:`~reclra.network.LayeredNet` computing ``module``'s logits with its own weights.

    Args:
        module: an ``nn.Sequential`` or a module ``torch.fx`` can trace, of one input, returning
            logits ``(B, classes)``.
        example_input: a batch ``(B, *input_shape)`` the module accepts; it fixes the shapes of
            every representation (one example's shape is ``example_input.shape[1:]``). The module
            runs on it once in eval mode (batch-norm statistics are left as they are).

    Returns:
        The converted network: layer ``k`` ends at the ``k``-th activation (see the module
        docstring), residual additions become ``skip_from`` inputs and :attr:`LayeredNet.blocks`.
        Its parameters and buffers are ``module``'s own.

    Raises:
        ValueError: naming the ``torch.fx`` node the converter cannot map.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"from_module converts an nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, Tensor) or example_input.dim() < 2:
        shape = tuple(example_input.shape) if isinstance(example_input, Tensor) else None
        raise ValueError(
            f"example_input must be a batch of shape (B, *input_shape), got "
            f"{type(example_input).__name__} of shape {shape}"
        )
    converter = _Converter(module, example_input)
    layers, blocks = converter.layers()
    net = LayeredNet(layers, input_shape=tuple(example_input.shape[1:]), blocks=blocks)
    own = {id(m) for m in module.modules()}
    for m in net.modules():  # the wrappers follow the module; its submodules keep their flags
        if id(m) not in own:
            m.training = module.training
    return net
