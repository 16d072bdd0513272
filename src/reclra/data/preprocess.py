"""Preprocessing of flattened images scaled to [0, 1]: global contrast normalisation, ZCA
whitening (CIFAR-10) and per-channel normalisation (ImageNet)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ZCA_EPSILON",
    "ChannelNormalization",
    "GcnZca",
    "GlobalContrastNormalization",
    "Preprocessing",
    "ZCAWhitening",
    "fit_gcn_zca",
]

#: Per-channel (RGB) mean and standard deviation of ImageNet, for [0, 1] pixel values.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Regulariser ε of ZCA whitening, added to the covariance eigenvalues.
ZCA_EPSILON = 0.1

#: A fitted preprocessing: maps N×D inputs scaled to [0, 1] to model inputs.
Preprocessing = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GlobalContrastNormalization:
    """Global contrast normalisation (GCN) of each example on its own.

    For each row ``x`` (one flattened image, values in [0, 1]), with ``v = pixel_range * x``
    (the pixel values back on their [0, 255] scale)::

        v ← scale · (v − mean(v)) / max(epsilon, sqrt(sqrt_bias + var(v)))

    where the mean and the (population, ddof 0) variance run over all the pixels of the image,
    channels included. The defaults (``scale=1``, ``sqrt_bias=10``, ``epsilon=1e-8``) give every
    image mean 0 and standard deviation ``sqrt(var / (10 + var))`` ≈ 1. ``sqrt_bias`` = λ = 10
    is applied on the [0, 255] scale on purpose: on [0, 1] values, whose variance is at most
    0.25, it would swamp the variance and make GCN a near-constant scaling. It keeps flat,
    low-contrast images from being blown up (a constant image maps to zeros); ``epsilon`` only
    matters with ``sqrt_bias=0``.
    """

    scale: float = 1.0
    sqrt_bias: float = 10.0
    epsilon: float = 1e-8
    pixel_range: float = 255.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """GCN of each row of the N×D tensor ``x``; returns a new float32 tensor."""
        v = x.to(torch.float32) * self.pixel_range
        v.sub_(v.mean(dim=1, keepdim=True))
        norm = v.square().mean(dim=1, keepdim=True).add_(self.sqrt_bias).sqrt_()
        return v.div_(norm.clamp_(min=self.epsilon)).mul_(self.scale)


@dataclass(frozen=True)
class ZCAWhitening:
    """ZCA whitening ``x ← (x − mean) @ matrix``, fitted with :meth:`fit`.

    Attributes:
        mean: float32 feature means of the fitting data (length D).
        matrix: the float32 D×D symmetric whitening matrix
            ``W = U diag(1 / sqrt(S + epsilon)) Uᵀ``, where ``U diag(S) Uᵀ`` is the covariance
            of the centred fitting data.
        epsilon: the regulariser added to the eigenvalues ``S``.
    """

    mean: torch.Tensor
    matrix: torch.Tensor
    epsilon: float

    @classmethod
    def fit(
        cls, x: torch.Tensor, *, epsilon: float = ZCA_EPSILON, chunk_size: int = 4096
    ) -> ZCAWhitening:
        """Fit ZCA whitening to the rows of ``x`` (N×D, N >= 1).

        The covariance is ``Xcᵀ Xc / N`` of the centred data ``Xc``; it and its
        eigendecomposition are computed in float64 (``numpy.linalg.eigh``; eigenvalues below 0
        from rounding are clipped to 0). With fewer examples than features (N < D) the same
        matrix is obtained from the N×N Gram matrix ``Xc Xcᵀ / N`` instead, which is much
        cheaper: its eigenvectors give those of the covariance with nonzero eigenvalue, and the
        directions with zero variance get the factor ``1 / sqrt(epsilon)``.

        Args:
            x: the fitting data, one example per row.
            epsilon: regulariser added to the eigenvalues (> 0).
            chunk_size: rows converted to float64 at a time when accumulating the covariance.
        """
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f"ZCA needs an N×D matrix with N >= 1 rows, got shape {x.shape}")
        if not epsilon > 0:
            raise ValueError(f"ZCA epsilon must be > 0, got {epsilon}")
        x = x.detach().cpu()
        n, d = x.shape
        mean = torch.zeros(d, dtype=torch.float64)
        for start in range(0, n, chunk_size):
            mean += x[start : start + chunk_size].to(torch.float64).sum(dim=0)
        mean /= n
        if n >= d:
            cov = torch.zeros(d, d, dtype=torch.float64)
            for start in range(0, n, chunk_size):
                centred = x[start : start + chunk_size].to(torch.float64) - mean
                cov.addmm_(centred.T, centred)
            cov /= n
            values, vectors = np.linalg.eigh(cov.numpy())
            values = np.clip(values, 0.0, None)
            matrix = (vectors / np.sqrt(values + epsilon)) @ vectors.T
        else:
            centred = (x.to(torch.float64) - mean).numpy()
            values, vectors = np.linalg.eigh(centred @ centred.T / n)
            # Drop the null space (and rounding noise): directions with variance far below
            # epsilon get 1 / sqrt(epsilon) whether kept or not.
            keep = values > 1e-9 * max(float(values.max(initial=0.0)), epsilon)
            values = values[keep]
            # Unit eigenvectors of the covariance with eigenvalue values[i].
            u = centred.T @ (vectors[:, keep] / np.sqrt(n * values))
            matrix = (u * (1.0 / np.sqrt(values + epsilon) - 1.0 / math.sqrt(epsilon))) @ u.T
            matrix[np.diag_indices(d)] += 1.0 / math.sqrt(epsilon)
        matrix = (matrix + matrix.T) / 2.0
        return cls(
            mean=mean.to(torch.float32),
            matrix=torch.from_numpy(matrix).to(torch.float32),
            epsilon=float(epsilon),
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten the rows of ``x`` (on ``x``'s device); returns a new float32 tensor."""
        x = x.to(torch.float32)
        mean = self.mean.to(x.device)
        matrix = self.matrix.to(x.device)
        return (x - mean) @ matrix

    def to(self, device: torch.device | str | None) -> ZCAWhitening:
        """A copy with ``mean`` and ``matrix`` on ``device``."""
        return ZCAWhitening(self.mean.to(device), self.matrix.to(device), self.epsilon)


@dataclass(frozen=True)
class GcnZca:
    """Global contrast normalisation then ZCA whitening: ``zca(gcn(x))``.

    The preprocessing of CIFAR-10 (see :func:`fit_gcn_zca`), applied to flattened images with
    values in [0, 1]; kept as :attr:`Dataset.preprocessing` so it can be applied to new images.
    """

    gcn: GlobalContrastNormalization
    zca: ZCAWhitening

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.zca(self.gcn(x))

    def to(self, device: torch.device | str | None) -> GcnZca:
        """A copy with the ZCA tensors on ``device``."""
        return GcnZca(self.gcn, self.zca.to(device))


def fit_gcn_zca(
    x: torch.Tensor,
    *,
    gcn: GlobalContrastNormalization | None = None,
    zca_epsilon: float = ZCA_EPSILON,
) -> GcnZca:
    """Fit the CIFAR-10 preprocessing to training images ``x`` (N×D, values in [0, 1]).

    Each image is contrast-normalised with ``gcn`` (default :class:`GlobalContrastNormalization`
    with its defaults), then ZCA whitening (:meth:`ZCAWhitening.fit`, ``epsilon=zca_epsilon``) is
    fitted to the normalised images. Fit it on the training split only and apply the result to
    every split.
    """
    gcn = gcn if gcn is not None else GlobalContrastNormalization()
    return GcnZca(gcn, ZCAWhitening.fit(gcn(x), epsilon=zca_epsilon))


@dataclass(frozen=True)
class ChannelNormalization:
    """Per-channel normalisation ``(x − mean[c]) / std[c]`` of flattened C×H×W images.

    ``x`` holds channel-major rows (all pixels of channel 0, then channel 1, …) with values in
    [0, 1]; ``mean`` and ``std`` have one entry per channel.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the rows of the N×(C·H·W) tensor ``x``; returns a new float32 tensor."""
        channels = len(self.mean)
        v = x.to(torch.float32).reshape(x.shape[0], channels, x.shape[1] // channels)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1)
        return ((v - mean) / std).reshape(x.shape)

    def to(self, device: torch.device | str | None) -> ChannelNormalization:
        """This object (it holds no tensors)."""
        del device
        return self


def _imagenet_normalization(x: torch.Tensor) -> ChannelNormalization:
    """The fixed ImageNet normalisation (``x``, the training data, is not used)."""
    del x
    return ChannelNormalization(IMAGENET_MEAN, IMAGENET_STD)
