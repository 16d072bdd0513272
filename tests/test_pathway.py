"""Error-pathway DAG: validation, presets, levels."""

from __future__ import annotations

import pytest

from reclra.models import Block
from reclra.pathway import Pathway


def test_levels_group_independent_layers():
    p = Pathway.from_edges([(5, 4), (5, 2), (4, 3), (2, 1), (3, 1)], 5)
    assert p.levels == ((5,), (4, 2), (3,), (1,))
    assert p.parents(1) == [2, 3]
    assert p.keys == ["5->4", "5->2", "4->3", "2->1", "3->1"]


def test_blocks_preset_has_depth_two():
    blocks = (Block(output=3, support=(2,)), Block(output=5, support=(4,)))
    p = Pathway.preset("blocks", 6, blocks)
    assert set(p.edges) == {(6, 3), (3, 2), (6, 5), (5, 4), (6, 1)}  # layer 1: in no block
    assert p.depth == 2


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([(3, 2), (2, 1), (1, 2)], r"cycle: (2 -> 1 -> 2|1 -> 2 -> 1)"),
        ([(3, 2), (2, 2)], "self-loop"),
        ([(3, 2)], r"reaches layer\(s\) \[1\]"),
        ([(3, 2), (2, 1), (2, 1)], "twice"),
        ([(3, 2), (2, 1), (4, 1)], "outside 1..3"),
        ([(3, 2), (2, 1), (1, 3)], "root"),
        ([(3, 2), (2,)], "pair"),
        ([(3, 2), (1, 2), (2, 1)], "cycle"),
    ],
)
def test_invalid_pathways_are_refused(edges, message):
    with pytest.raises(ValueError, match=message):
        Pathway.from_edges(edges, 3)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown pathway"):
        Pathway.preset("ring", 3)
