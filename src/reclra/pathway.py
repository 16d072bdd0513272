"""The error pathway: a DAG over layers along which rec-LRA sends error messages (SPEC §1).

An edge ``(j, i)`` means "the error neurons of layer ``j`` displace the target of layer ``i``"
through a synapse ``E_{j→i}`` of shape ``(n_i, n_j)``. The root is the output layer ``L``. The
pathway is separate from the forward graph: any acyclic wiring in which every hidden layer is
reached from the root is accepted. :attr:`Pathway.levels` groups the layers whose parents are all
computed — the layers of one level are independent and may run in parallel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["PRESETS", "Pathway", "edge_key"]

PRESETS = ("chain", "skip", "blocks")


def edge_key(j: int, i: int) -> str:
    """Name of the synapse ``E_{j→i}``, e.g. ``"3->2"``."""
    return f"{j}->{i}"


@dataclass(frozen=True)
class Pathway:
    """A validated error pathway over layers ``1 … L`` rooted at ``L``.

    Use :meth:`from_edges` or :meth:`preset` to build one; both validate.
    """

    num_layers: int
    edges: tuple[tuple[int, int], ...]
    levels: tuple[tuple[int, ...], ...]

    @classmethod
    def from_edges(
        cls,
        edges: Iterable[Sequence[int]],
        num_layers: int,
        *,
        targets: Iterable[int] | None = None,
    ) -> Pathway:
        """Validate ``edges`` (pairs ``(j, i)``) for a network of ``num_layers`` layers.

        ``targets`` lists the layers that need a target (default: every hidden layer); a rule that
        trains some layers otherwise (e.g. backprop inside residual blocks) narrows it.

        Raises ``ValueError`` for malformed or out-of-range edges, self-loops, duplicates, a cycle
        (named), or a layer of ``targets`` that no path from the output reaches.
        """
        L = int(num_layers)
        if L < 1:
            raise ValueError(f"a pathway needs at least one layer, got {num_layers}")
        clean: list[tuple[int, int]] = []
        for edge in edges:
            try:
                j, i = (int(v) for v in edge)
            except (TypeError, ValueError):
                raise ValueError(
                    f"a pathway edge must be a pair (j, i) of layers, got {edge!r}"
                ) from None
            if not (1 <= i <= L and 1 <= j <= L):
                raise ValueError(f"edge {j}->{i} names a layer outside 1..{L}")
            if i == j:
                raise ValueError(f"edge {j}->{i} is a self-loop (cycle {j} -> {j})")
            if i == L:
                raise ValueError(f"edge {j}->{i} points into the output layer {L}, the root")
            if (j, i) in clean:
                raise ValueError(f"edge {j}->{i} is listed twice")
            clean.append((j, i))
        children: dict[int, list[int]] = {n: [] for n in range(1, L + 1)}
        for j, i in clean:
            children[j].append(i)
        cycle = _find_cycle(children)
        if cycle:
            raise ValueError("the error pathway has a cycle: " + " -> ".join(map(str, cycle)))
        levels = _levels(children, root=L)
        reached = {n for level in levels for n in level}
        needed = range(1, L) if targets is None else targets
        missing = [n for n in needed if n not in reached]
        if missing:
            raise ValueError(
                f"no error path from the output layer {L} reaches layer(s) {missing}; "
                f"every hidden layer needs a target"
            )
        return cls(num_layers=L, edges=tuple(clean), levels=levels)

    @classmethod
    def preset(cls, name: str, num_layers: int, blocks: Sequence = ()) -> Pathway:
        """``chain`` (E_{ℓ+1→ℓ}), ``skip`` (E_{L→ℓ}) or ``blocks`` (depth 2 over residual blocks).

        ``blocks`` takes the model's :class:`~reclra.models.Block` list: the output feeds every
        block's output layer, which feeds its support layers; layers in no block hang off the
        output.
        """
        L = num_layers
        if name == "chain":
            edges = [(ell + 1, ell) for ell in range(1, L)]
        elif name == "skip":
            edges = [(L, ell) for ell in range(1, L)]
        elif name == "blocks":
            if not blocks:
                raise ValueError(
                    "the 'blocks' pathway needs a residual model (this one has no blocks); "
                    "use 'chain' or 'skip'"
                )
            edges, covered = [], set()
            for block in blocks:
                if block.output != L:
                    edges.append((L, block.output))
                edges += [(block.output, s) for s in block.support]
                covered |= {block.output, *block.support}
            edges += [(L, ell) for ell in range(1, L) if ell not in covered]
        else:
            raise ValueError(
                f"unknown pathway {name!r}; choose from {', '.join(PRESETS)} or give edges"
            )
        return cls.from_edges(edges, L)

    def parents(self, i: int) -> list[int]:
        """Layers ``j`` with an edge ``j → i``."""
        return [j for j, k in self.edges if k == i]

    @property
    def depth(self) -> int:
        """Recursive depth: number of levels below the root (chain: L−1, skip: 1, blocks: 2)."""
        return len(self.levels) - 1

    @property
    def keys(self) -> list[str]:
        """Synapse names ``"j->i"`` of every edge."""
        return [edge_key(j, i) for j, i in self.edges]


def _find_cycle(children: dict[int, list[int]]) -> list[int] | None:
    """A cycle as a closed list of nodes (``[a, b, a]``), or ``None`` (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(children, WHITE)
    for start in children:
        if colour[start] != WHITE:
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        path: list[int] = [start]
        colour[start] = GREY
        while stack:
            node, idx = stack[-1]
            if idx < len(children[node]):
                stack[-1] = (node, idx + 1)
                child = children[node][idx]
                if colour[child] == GREY:
                    return [*path[path.index(child) :], child]
                if colour[child] == WHITE:
                    colour[child] = GREY
                    stack.append((child, 0))
                    path.append(child)
            else:
                colour[node] = BLACK
                stack.pop()
                path.pop()
    return None


def _levels(children: dict[int, list[int]], root: int) -> tuple[tuple[int, ...], ...]:
    """Group the nodes reached from ``root`` so that each node comes after all its parents.

    A node's level is the length of the longest path from the root to it (the pathway is acyclic).
    """
    level = {root: 0}
    indegree: dict[int, int] = {n: 0 for n in children}
    reach = {root}
    frontier = [root]
    while frontier:  # nodes reachable from the root
        node = frontier.pop()
        for c in children[node]:
            if c not in reach:
                reach.add(c)
                frontier.append(c)
    for node in reach:
        for c in children[node]:
            indegree[c] += 1
    ready = [root]
    order = []
    while ready:  # Kahn's algorithm restricted to the reachable part
        node = ready.pop()
        order.append(node)
        for c in children[node]:
            level[c] = max(level.get(c, 0), level[node] + 1)
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    depth = max(level[n] for n in order)
    return tuple(
        tuple(sorted((n for n in order if level[n] == k), reverse=True)) for k in range(depth + 1)
    )
