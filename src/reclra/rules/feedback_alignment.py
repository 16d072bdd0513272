"""Feedback alignment (FA, Lillicrap et al. 2016) and direct feedback alignment (DFA, Nøkland 2016).

Both walk the layers from the top with a fixed random feedback pathway in place of the weight
transpose, and update each layer by the local VJP of its own operator
(:func:`reclra.layers.local_update`) with cotangent ``δ_ℓ = ∂L/∂h_ℓ``'s stand-in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reclra.activations import Activation
from reclra.functional import displacement, output_error
from reclra.layers import Layer, local_update, replay
from reclra.network import LayeredNet, Trace
from reclra.rules.base import Rule, StepStats, SynapseDict, error_norm

__all__ = ["DFA", "FA"]


def activation_vjp(act: Activation, h: Tensor, v: Tensor) -> Tensor:
    """``vᵀ ∂φ(h)/∂h`` for ``φ = g∘f`` (straight-through for discretizers)."""
    with torch.enable_grad():
        h_ = h.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(act(h_), h_, v.view_as(h_))
    return grad


def _feedback_params(layer: Layer) -> list[str]:
    """Names of the layer parameters a feedback matrix stands in for (matrices and kernels)."""
    return [n for n, p in layer.named_parameters() if p.dim() >= 2]


def _key(ell: int, pname: str) -> str:
    return f"{ell}:{pname}".replace(".", "/")


def input_vjp(
    layer: Layer, z_in: Tensor, skip: Tensor | None, delta_h: Tensor, swap: dict[str, Tensor]
) -> tuple[Tensor, Tensor | None]:
    """Cotangents on the layer's inputs (operator input, residual input), with the parameters in
    ``swap`` replaced (FA's ``B`` standing in for ``W``)."""
    if layer.is_dense:
        delta_skip = None if skip is None else delta_h.view_as(skip)
        return delta_h @ swap["op.weight"], delta_skip  # (B, n_out) @ (n_out, n_in)
    with torch.enable_grad():
        inputs = [z_in.detach().requires_grad_(True)]
        if skip is not None:
            inputs.append(skip.detach().requires_grad_(True))
        h = replay(layer, inputs[0], inputs[1] if skip is not None else None, swap)
        grads = torch.autograd.grad(h, inputs, delta_h.view_as(h))
    return grads[0], (grads[1] if skip is not None else None)


class FA(Rule):
    """Feedback alignment: ``δ_{ℓ−1} = φ'(h_{ℓ−1}) ⊙ (B_ℓ-transported δ_ℓ)``, ``B_ℓ`` fixed random.

    ``B_ℓ`` has the shape of ``W_ℓ`` and replaces it in the backward pass only; with ``B_ℓ = W_ℓ``
    FA is exactly backprop. Residual inputs pass their error straight through, as in backprop.

    Args:
        net: the network.
        feedback_init: init scheme of ``B`` (see :data:`reclra.layers.INITS`).
        feedback_std: its std for the ``gaussian`` scheme.
    """

    name = "fa"

    def __init__(
        self, net: LayeredNet, *, feedback_init: str = "uniform", feedback_std: float = 0.05
    ) -> None:
        super().__init__(net)
        shapes = {
            _key(ell, n): tuple(net.layer(ell).get_parameter(n).shape)
            for ell in range(2, net.num_layers + 1)
            for n in _feedback_params(net.layer(ell))
        }
        self.B = SynapseDict(shapes, learnable=False, init=feedback_init, std=feedback_std)

    def feedback(self, ell: int) -> dict[str, Tensor]:
        """The feedback tensors of layer ``ℓ``, by operator-parameter name."""
        return {n: self.B[_key(ell, n)] for n in _feedback_params(self.net.layer(ell))}

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        self.check_batch(x, y)
        with torch.no_grad():
            trace = self.net.trace(x, local_graphs=True)
            e_L, loss = output_error(trace.logits, y)
        norms = backward_walk(self.net, trace, e_L, self.feedback)
        return StepStats(loss=loss, error_norms=norms, depth=float(self.net.num_layers))


def backward_walk(net: LayeredNet, trace: Trace, e_L: Tensor, feedback) -> dict[int, Tensor]:
    """Walk from the output down, updating each layer locally and sending ``δ`` with ``feedback``.

    ``feedback(ℓ)`` gives the tensors that stand in for layer ``ℓ``'s weights in the backward pass.
    Returns the per-layer error norms.
    """
    L = net.num_layers
    delta_out: dict[int, Tensor] = {}  # cotangent on z*_k, summed over every consumer
    delta_h = e_L
    norms = {}
    for ell in range(L, 0, -1):
        layer = net.layer(ell)
        if ell < L:
            delta_h = activation_vjp(layer.activation, trace.h[ell], delta_out.pop(ell))
        norms[ell] = error_norm(delta_h)
        local_update(layer, trace, ell, delta_h)
        if ell == 1:
            break
        delta_in, delta_skip = input_vjp(
            layer, trace.inp[ell], trace.skip[ell], delta_h, feedback(ell)
        )
        _add(delta_out, ell - 1, delta_in)
        if layer.skip_from:  # the residual input's consumer sends its error straight back
            _add(delta_out, layer.skip_from, delta_skip)
    return norms


def _add(acc: dict[int, Tensor], k: int, v: Tensor) -> None:
    acc[k] = v if k not in acc else acc[k] + v


class DFA(Rule):
    """Direct feedback alignment: ``δ_ℓ = φ'(h_ℓ) ⊙ B_ℓ e_L`` for every hidden layer.

    ``B_ℓ`` (``n_ℓ × n_L``) is fixed and random; the output layer uses ``e_L`` itself.

    Args:
        net: the network.
        feedback_init: init scheme of ``B`` (see :data:`reclra.layers.INITS`).
        feedback_std: its std for the ``gaussian`` scheme.
    """

    name = "dfa"

    def __init__(
        self, net: LayeredNet, *, feedback_init: str = "uniform", feedback_std: float = 0.05
    ) -> None:
        super().__init__(net)
        L = net.num_layers
        n_L = net.layer(L).size
        shapes = {str(ell): (net.layer(ell).size, n_L) for ell in range(1, L)}
        self.B = SynapseDict(shapes, learnable=False, init=feedback_init, std=feedback_std)

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        self.check_batch(x, y)
        with torch.no_grad():
            trace = self.net.trace(x, local_graphs=True)
            e_L, loss = output_error(trace.logits, y)
        L = self.net.num_layers
        norms = {L: error_norm(e_L)}
        local_update(self.net.layer(L), trace, L, e_L)
        for ell in range(1, L):  # independent of each other: any order, or in parallel
            layer = self.net.layer(ell)
            delta_z = displacement(self.B[str(ell)], e_L)
            delta_h = activation_vjp(layer.activation, trace.h[ell], delta_z)
            norms[ell] = error_norm(delta_h)
            local_update(layer, trace, ell, delta_h)
        return StepStats(loss=loss, error_norms=norms, depth=1.0)
