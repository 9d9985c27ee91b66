"""Connected components of a graph given as a PCollection of edges, with the large-star / small-star algorithm.

Kiveris, Lattanzi, Mirrokni, Rastogi, Vassilvitskii, "Connected Components in MapReduce and Beyond"
(SoCC 2014). Each round is two GroupByKeys:

- large-star: every node links each of its *larger* neighbours to the smallest node of its neighbourhood;
- small-star: every node links itself and its *smaller* neighbours to the smallest of them.

Both steps keep the graph's connectivity and never join two components, and their fixed point is a
star per component centred on its smallest node, reached in O(log² n) rounds (about log n in
practice: 18 rounds for a 100,000-node chain). Beam has no loops, so the rounds are unrolled up to
`max_rounds`; a round after convergence just passes the stars through. After the last round every
node is labelled with its smallest neighbour (or itself) and the result is checked: a label that is
not a root of its own means the rounds did not suffice, counted as `components|info|unconverged_nodes`
(the labels are then still within one true component, so such a component may keep more than one
document, never fewer; raise `max_rounds`).

Memory: a node's neighbours are held as a set while it is reduced, so the cost per key is its degree
(the centre of a cluster of k documents holds k ids); nothing holds the whole graph.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import apache_beam as beam

from pipeline.core.accounting import StageCounters

Edge = tuple[Hashable, Hashable]


def _canonical(edge: Edge) -> Iterator[Edge]:
    """(larger, smaller); self-loops carry no connectivity and are dropped."""
    u, v = edge
    if u != v:
        yield (u, v) if u > v else (v, u)


def _both_directions(edge: Edge) -> tuple[Edge, Edge]:
    return (edge[0], edge[1]), (edge[1], edge[0])


def _large_star(item: tuple[Hashable, Iterable[Hashable]]) -> Iterator[Edge]:
    node, neighbours = item
    neighbours = set(neighbours)
    smallest = min(min(neighbours), node)
    for neighbour in neighbours:
        if neighbour > node:
            yield (neighbour, smallest)


def _small_star(item: tuple[Hashable, Iterable[Hashable]]) -> Iterator[Edge]:
    node, smaller = item
    members = set(smaller)
    members.add(node)
    smallest = min(members)
    for member in members:
        if member != smallest:
            yield (member, smallest)


def _smallest_neighbour(item: tuple[Hashable, Iterable[Hashable]]) -> tuple[Hashable, Hashable]:
    node, neighbours = item
    return node, min(min(neighbours), node)


class _Round(beam.PTransform):
    def expand(self, edges):
        large = (
            edges
            | "Both directions" >> beam.FlatMap(_both_directions)
            | "Group neighbours" >> beam.GroupByKey()
            | "Large star" >> beam.FlatMap(_large_star)
        )
        return (
            large
            | "Group smaller" >> beam.GroupByKey()  # edges are (larger, smaller): keyed by the larger end
            | "Small star" >> beam.FlatMap(_small_star)
        )


class _CheckLabels(beam.DoFn):
    """Joined on a label: the label must be its own label (a root), else its members did not converge."""

    def __init__(self, stage: str):
        self.counts = StageCounters(stage)

    def process(self, item: tuple[Hashable, dict[str, list[Any]]]) -> Iterator[tuple[Hashable, Hashable]]:
        node, joined = item
        own = joined["own"]
        members = joined["members"]
        if own:
            yield node, own[0]
        if members and own and own[0] != node:
            self.counts.note("components", "unconverged_nodes", len(members))


class ConnectedComponents(beam.PTransform):
    """Edges (u, v) → (node, smallest node of its component), for every node that has an edge.

    Nodes may be any totally ordered values with a deterministic Beam encoding (strings here).
    """

    def __init__(self, max_rounds: int, stage: str = "components"):
        super().__init__()
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1 (got {max_rounds})")
        self.max_rounds = max_rounds
        self.stage = stage

    def expand(self, edges):
        counts = StageCounters(self.stage)

        def count_edge(edge: Edge) -> Iterator[Edge]:
            counts.note("components", "edges")
            yield from _canonical(edge)

        current = edges | "Canonical edges" >> beam.FlatMap(count_edge)
        for index in range(self.max_rounds):
            current = current | f"Round {index + 1}" >> _Round()
        labels = (
            current
            | "Final both directions" >> beam.FlatMap(_both_directions)
            | "Final neighbours" >> beam.GroupByKey()
            | "Smallest neighbour" >> beam.Map(_smallest_neighbour)
        )
        members = labels | "Members by label" >> beam.FlatMap(
            lambda pair: [(pair[1], pair[0])] if pair[1] != pair[0] else [])
        return (
            {"own": labels, "members": members}
            | "Join labels" >> beam.CoGroupByKey()
            | "Check convergence" >> beam.ParDo(_CheckLabels(self.stage))
        )
