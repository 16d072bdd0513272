"""The fused kernel of rec-LRA for plain MLPs on the ``skip`` pathway (the speed path).

On the ``skip`` pathway every hidden layer ``i`` reads the output's error ``e_L`` alone, so the
whole level below the root is a handful of batched kernels whatever the depth. With the hidden
layers of one width ``n`` stacked as ``(k, B, n)`` (``k = L − 1``)::

    Y = f(H − β e_L E_stackᵀ)              one batched GEMM adding onto H: every h_i − β d_i
    Err = Z − Y                            elementwise, all layers at once (eqs. 3–4)
    ΔW_1 = Err_1ᵀ x / B                    one GEMM
    ΔW_{2..k} = Err_{2..k}ᵀ Z_{1..k−1} / B  one batched GEMM (the inputs are views of Z)
    Δb = Σ_b Err / B                        one reduction
    ΔE_{L→i} = γ cot_iᵀ e_L / B            one batched GEMM (learnable synapses)

The forward pass writes ``h`` and ``z`` straight into stacked buffers kept between steps (per
batch size, device and dtype), so no activation is copied and no buffer is allocated per step
(the level then turns ``h`` into the targets and the errors in place: the trace's ``h`` of the
hidden layers is scratch once the level has run);
the directions are fresh tensors (they become ``.grad``). No autograd is involved. The maths is
that of the layer-by-layer walk (:meth:`RecLRA.layer_work`): the two agree to float rounding
(batched and single GEMMs may round differently), which the tests check.

The kernel applies when every layer is a plain ``nn.Linear`` with no residual input, every hidden
layer has the same width and a plain activation (``z* = f(h)``), the pathway is ``skip``, no
re-projection bound is set and the executor is ``serial``; otherwise :class:`~reclra.rules.RecLRA`
walks layer by layer. Then ``compute_grads`` is :meth:`DenseSkipKernel.step`: the output layer
and this level in one function, with none of the walk's per-level bookkeeping (at batch 32 that
bookkeeping is a tenth of a step); ``RecLRA.walk`` (for analyses) still walks the levels, the
hidden one through :meth:`DenseSkipKernel.level_work`. Where the synapses are fixed and the
hidden layers are ``tanh`` or ``sigmoid``, a CPU step runs compiled
(:mod:`reclra.rules.rec_lra_native`, the same maths in C++, with the directions' buffers reused
between steps where nothing else holds them); ``native=False`` keeps it in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from reclra.executors import SerialExecutor
from reclra.functional import output_error
from reclra.layers import local_grads
from reclra.network import Trace
from reclra.rules.base import Step, StepStats, error_norm
from reclra.rules.rec_lra_native import native_step
from reclra.walk import Directions, LayerUpdate, apply_directions

if TYPE_CHECKING:
    from reclra.rules.rec_lra import RecLRA

__all__ = ["DenseSkipKernel"]

#: activations with an ``out=`` form: written straight into the stacked buffer
_INTO = {torch.tanh: torch.tanh, torch.sigmoid: torch.sigmoid}
#: the compiled step's code of each activation it implements (``rec_lra_native.cpp``)
_NATIVE = {torch.tanh: 0, torch.sigmoid: 1}


class DenseSkipKernel:
    """Batched rec-LRA step of a plain MLP on the ``skip`` pathway (see the module docstring).

    Build it with :meth:`for_rule`, which returns ``None`` where the kernel does not apply.
    """

    def __init__(self, rule: RecLRA) -> None:
        net = rule.net
        self.rule = rule
        self.L = net.num_layers
        self.hidden = tuple(range(1, self.L))  # the level below the root, in order
        self.width = net.layer(1).size
        self.keys = tuple(f"{self.L}->{i}" for i in self.hidden)
        # looked up once, as an optimizer holds its parameters: (W_i, b_i) and f_i per layer
        self._params = tuple((net.layer(i).op.weight, net.layer(i).op.bias) for i in self.hidden)
        self._fs = tuple(net.layer(i).activation.f for i in self.hidden)
        common = self._fs[0]
        self._f_into = _INTO.get(common) if all(f is common for f in self._fs) else None
        self._out = net.layer(self.L)
        self._out_params = (self._out.op.weight, self._out.op.bias)
        # the compiled step (rec_lra_native) for fixed synapses and tanh or sigmoid layers: built
        # (or loaded from the cache) here, not in a timed first step
        self._native_f = _NATIVE.get(self._f_into)
        self.native = (
            rule.native
            and self._native_f is not None
            and not rule.synapses.learnable
            and native_step() is not None
        )
        self._all_W = (*(W for W, _ in self._params), self._out_params[0])
        self._all_b = (*(b for _, b in self._params), self._out_params[1])
        self._pool = [torch.empty(0)] * 5  # the compiled step's direction buffers, reused
        self._buffers: dict[tuple, dict[str, Tensor]] = {}
        self._fixed_stack: tuple[tuple, Tensor, Tensor] | None = None

    @classmethod
    def for_rule(cls, rule: RecLRA) -> DenseSkipKernel | None:
        net, L = rule.net, rule.net.num_layers
        if L < 2 or rule.clip is not None or not isinstance(rule.executor, SerialExecutor):
            return None  # an explicit executor runs the walk's levels: the kernel would bypass it
        if any(
            not layer.is_dense or layer.skip_from is not None or layer.op.bias is None
            for layer in net.layers
        ):
            return None
        hidden = [net.layer(i) for i in range(1, L)]
        if len({layer.size for layer in hidden}) != 1:
            return None
        if not all(layer.activation.plain for layer in hidden):
            return None
        if set(rule.pathway.edges) != {(L, i) for i in range(1, L)}:
            return None
        return cls(rule)

    # -- buffers ------------------------------------------------------------------------------

    def _stacks(self, like: Tensor) -> dict[str, Tensor]:
        """``H``, ``Z``, ``D`` of shape ``(k, B, n)`` for this batch (kept between steps)."""
        key = (like.shape[0], like.device, like.dtype)
        bufs = self._buffers.get(key)
        if bufs is None:
            shape = (len(self.hidden), like.shape[0], self.width)  # (k, B, n)
            bufs = {name: like.new_empty(shape) for name in ("H", "Z", "D")}
            bufs["H_k"], bufs["Z_k"] = bufs["H"].unbind(0), bufs["Z"].unbind(0)  # (B, n) views
            if len(self._buffers) >= 2:  # the full batch size and the last, smaller batch
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = bufs
        return bufs

    def __getstate__(self) -> dict:  # buffers are scratch space: a copy makes its own
        return {
            **self.__dict__,
            "_buffers": {},
            "_fixed_stack": None,
            "_pool": [torch.empty(0)] * 5,
        }

    def _synapse_stack(self, transposed: bool = False) -> Tensor:
        """``E_{L→i}`` stacked, ``(k, n, n_L)`` (``transposed``: ``(k, n_L, n)``); cached while
        fixed synapses are unchanged."""
        synapses = self.rule.E
        E = [synapses[key] for key in self.keys]
        if self.rule.synapses.learnable:
            stack = torch.stack(E)
            return stack.transpose(1, 2) if transposed else stack
        stamp = tuple((e.data_ptr(), e._version) for e in E)
        if self._fixed_stack is None or self._fixed_stack[0] != stamp:
            stack = torch.stack(E)
            self._fixed_stack = (stamp, stack, stack.transpose(1, 2))
        return self._fixed_stack[2 if transposed else 1]

    # -- the step -----------------------------------------------------------------------------

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        """One whole ``compute_grads`` (under ``no_grad``): the forward pass into the stacks, the
        output error, the output layer's update, the level below it; ``.grad`` filled as the
        walk fills it. The walk's levels without its per-level bookkeeping (a step of a small
        batch is short enough for that to show); compiled (:mod:`.rec_lra_native`) where that
        applies (fixed synapses, tanh or sigmoid, a CPU float32/float64 batch)."""
        if self.native and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
            return self._native_step(native_step(), x, y)
        z = x.flatten(1)
        bufs, h_L = self._forward(z)
        e_L, loss = output_error(h_L, y)
        rule = self.rule
        learns, norm_L = rule._learns(e_L)
        root = local_grads(self._out, bufs["Z_k"][-1], e_L) if learns else ()
        apply_directions(root)
        _, norm, directions = self._hidden(e_L, z, bufs)
        for layer_directions in directions:
            apply_directions(layer_directions)
        norms = dict(zip(self.hidden, norm.unbind(0), strict=True))
        norms[self.L] = error_norm(e_L) if norm_L is None else norm_L
        return StepStats(loss=loss, error_norms=norms, depth=float(rule.pathway.depth))

    def _native_step(self, compiled, x: Tensor, y: Tensor) -> StepStats:
        """:meth:`step` by the compiled function, which sets every ``.grad`` itself."""
        z = x.flatten(1)
        bufs = self._stacks(z)
        E_t = self._synapse_stack(transposed=True)  # (k, n_L, n)
        beta = float(self.rule.betas[0])
        loss, *out = compiled(
            z,
            y,
            self._all_W,
            self._all_b,
            E_t,
            bufs["H"],
            bufs["Z"],
            beta,
            self._native_f,
            self._pool,
            float(self.rule.epsilon),
        )
        self._pool = out[:5]  # the directions' buffers, for the next step
        norms = dict(zip((*self.hidden, self.L), out[5:], strict=True))
        return StepStats(loss=loss, error_norms=norms, depth=float(self.rule.pathway.depth))

    def _forward(self, z: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The forward pass of a flat batch ``z`` into the stacked buffers; returns them and
        the logits ``h_L``."""
        bufs = self._stacks(z)
        H_k, Z_k = bufs["H_k"], bufs["Z_k"]
        for k, ((W, b), f) in enumerate(zip(self._params, self._fs, strict=True)):
            torch.addmm(b, z, W.t(), out=H_k[k])  # h_i = W_i z_{i−1} + b_i
            if self._f_into is not None:
                self._f_into(H_k[k], out=Z_k[k])
            else:
                Z_k[k].copy_(f(H_k[k]))
            z = Z_k[k]
        W_L, b_L = self._out_params
        return bufs, torch.addmm(b_L, z, W_L.t())  # h_L, as the output layer's nn.Linear

    def record(self, x: Tensor) -> Trace:
        """The forward pass into the stacked buffers, as a :class:`Trace` of views."""
        z = x.flatten(1)
        bufs, h_L = self._forward(z)
        Z_k = bufs["Z_k"]
        inp = [None, z, *Z_k]  # inp[ℓ] = z*_{ℓ−1}: the input, then every stacked z
        zs = [None, *Z_k, self._out.activation.f(h_L)]
        none = [None] * (self.L + 1)
        h = [None, *bufs["H_k"], h_L]
        return Trace(inp=inp, skip=none, local=none, h=h, z=zs, out=[z, *zs[1:]])

    def level_work(
        self, step: Step, level: Sequence[int], done: Mapping[int, LayerUpdate]
    ) -> list[LayerUpdate] | None:
        """Every hidden layer's update in batched kernels (``None`` for the root level)."""
        if sorted(level) != list(self.hidden):
            return None
        e_L = done[self.L].error  # (B, n_L)
        bufs = self._stacks(e_L)
        if bufs["H"].data_ptr() != step.trace.h[1].data_ptr():
            return None  # not a trace of this kernel (a step recorded elsewhere)
        err, norm, directions = self._hidden(e_L, step.trace.inp[1], bufs)
        updates = {
            i: LayerUpdate(err[j], directions[j], norm=norm[j]) for j, i in enumerate(self.hidden)
        }
        return [updates[i] for i in level]

    def _hidden(
        self, e_L: Tensor, x: Tensor, bufs: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, list[Directions]]:
        """The hidden layers' error neurons ``(k, B, n)``, their mean norms ``(k,)`` and each
        layer's directions (none for a layer that does not learn), from ``e_L``, the flat input
        ``x`` and the stacks the forward pass filled."""
        rule = self.rule
        H, Z, D = bufs["H"], bufs["Z"], bufs["D"]
        B = e_L.shape[0]
        k = len(self.hidden)
        E_stack = self._synapse_stack()  # (k, n, n_L)
        e_k = e_L.expand(k, *e_L.shape)  # (k, B, n_L), a view
        # h_i − β E_{L→i} e_L for every layer in one batched GEMM adding onto H in place: the
        # step reads h no more, so its buffer holds the targets, then the errors
        Y = torch.baddbmm(H, e_k, E_stack.transpose(1, 2), alpha=-rule.betas[0], out=H)
        if self._f_into is not None:
            self._f_into(Y, out=Y)  # y_i = f(h_i − β d_i)
        else:
            for j, f in enumerate(self._fs):
                Y[j].copy_(f(Y[j]))
        err = torch.sub(Z, Y, out=Y)  # e_i = z_i − y_i, (k, B, n), in place of y
        norm = torch.linalg.vector_norm(err, dim=2).mean(1)  # mean ‖e_i‖, (k,)
        if rule.epsilon > 0:  # adaptive depth: only the layers whose error reaches ε learn
            active = [j for j, v in enumerate(norm.tolist()) if v >= rule.epsilon]
        else:
            active = list(range(k))
        cotangent = None
        if rule.synapses.learnable:  # d_i itself is needed only here (eq. 6's cotangent)
            torch.matmul(e_L, E_stack.transpose(1, 2), out=D)  # d_i = E_{L→i} e_L, (k, B, n)
            cotangent = rule.gamma * rule.synapses.cotangent(D, Z)  # on d_i, (k, B, n)
        if len(active) == k:  # every layer at once: ΔW_i = mean e_i z_{i−1}ᵀ (inputs: Z shifted)
            dW = [_gemm(err[0].t(), x, 1.0 / B)]  # (n, D)
            if k > 1:
                dW += _gemm(err[1:].transpose(1, 2), Z[:-1], 1.0 / B).unbind(0)  # (k−1, n, n)
            db = err.mean(1).unbind(0)  # (k, n)
            if cotangent is not None:  # ΔE_{L→i} = γ mean cot_i e_Lᵀ, (k, n, n_L)
                dE = _gemm(cotangent.transpose(1, 2), e_k, 1.0 / B).unbind(0)
        else:  # the active layers one by one; the others' GEMMs are not done at all
            dW, db, dE = {}, {}, {}
            for j in active:
                dW[j] = _gemm(err[j].t(), x if j == 0 else Z[j - 1], 1.0 / B)
                db[j] = err[j].mean(0)
                if cotangent is not None:
                    dE[j] = _gemm(cotangent[j].t(), e_L, 1.0 / B)
        directions: list[Directions] = [()] * k
        for j in active:
            W, b = self._params[j]
            directions[j] = ((W, dW[j]), (b, db[j]))
            if cotangent is not None:
                directions[j] += ((rule.E[self.keys[j]], dE[j]),)
        return err, norm, directions


def _gemm(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """``alpha · a @ b`` into a fresh tensor, the scale applied inside the (batched) GEMM."""
    if a.dim() == 2:
        out = a.new_empty(a.shape[0], b.shape[1])
        return torch.addmm(out, a, b, beta=0.0, alpha=alpha, out=out)
    out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
    return torch.baddbmm(out, a, b, beta=0.0, alpha=alpha, out=out)
