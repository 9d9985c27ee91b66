"""Connected components in Beam (large-star / small-star) and near-duplicate clusters on transitive chains."""

from __future__ import annotations

import base64
import pickle
import random
import string
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.config import load_defaults
from pipeline.core.accounting import query_counts, stage_table, unbalanced
from pipeline.dedup import ConnectedComponents, DedupNear
from pipeline.dedup.keys import estimated_jaccard
from pipeline.dedup.minhash import NearDedupSettings, make_hasher
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from schemas.document import Document, Node

# The hasher of the default config: what DedupNear uses in the tests below.
DEFAULT_HASHER = make_hasher(NearDedupSettings.from_config(load_defaults()["dedup"]["near"], "dedup.near"))


class Collect(beam.PTransform):
    """Any elements → pickled lines under `directory`, read back by `collected` once the pipeline ran."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def expand(self, pcoll):
        return (pcoll | "Pickle" >> beam.Map(lambda e: base64.b64encode(pickle.dumps(e)).decode("ascii"))
                | "Write" >> beam.io.WriteToText(str(self.directory / "part")))


def collected(directory: Path) -> list:
    return [pickle.loads(base64.b64decode(line)) for path in sorted(directory.glob("part*"))
            for line in path.read_text().splitlines()]


def runner(config: dict) -> RunnerSettings:
    return RunnerSettings.from_config(config["runner"], "runner")


def run_components(config, edges: list[tuple[str, str]], rounds: int, tmp_path: Path):
    pipeline = make_pipeline([], runner(config))
    pipeline | beam.Create(edges) | ConnectedComponents(rounds, "test_cc") | Collect(tmp_path / "labels")
    result = pipeline.run()
    result.wait_until_finish()
    return dict(collected(tmp_path / "labels")), query_counts(result)


def reference_components(edges: list[tuple[str, str]]) -> dict[str, str]:
    """node → smallest node of its component, by scipy on one machine (the oracle)."""
    nodes = sorted({n for edge in edges for n in edge})
    index = {n: i for i, n in enumerate(nodes)}
    rows = [index[u] for u, _ in edges]
    cols = [index[v] for _, v in edges]
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(nodes), len(nodes)))
    _, label = connected_components(graph, directed=False)
    smallest: dict[int, str] = {}
    for node in nodes:
        smallest.setdefault(int(label[index[node]]), node)
    return {node: smallest[int(label[index[node]])] for node in nodes}


def long_chain(n: int, prefix: str, seed: int) -> list[tuple[str, str]]:
    """A path through n nodes whose names are in random order along it (the hard case for label propagation)."""
    names = [f"{prefix}{i:05d}" for i in range(n)]
    random.Random(seed).shuffle(names)
    return [(names[i], names[i + 1]) for i in range(n - 1)]


def test_components_match_a_reference_on_a_long_chain_and_a_random_graph(fast_config, tmp_path):
    rng = random.Random(7)
    chain = long_chain(500, "c", seed=1)
    nodes = [f"r{i:04d}" for i in range(400)]
    sparse = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(330)]  # many components, some cycles
    star = [("s0000", f"s{i:04d}") for i in range(1, 60)] + [(f"s{i:04d}", f"s{i + 1:04d}") for i in range(30, 50)]
    edges = chain + sparse + star + [("z1", "z1")]  # a self-loop alone is no component
    labels, counts = run_components(fast_config, edges, 14, tmp_path)
    expected = reference_components([e for e in edges if e[0] != e[1]])
    assert labels == expected
    assert len({labels[n] for n, _ in chain}) == 1  # the 500-node chain is one cluster
    assert counts["test_cc|components|info|edges"] == len(edges)
    assert "test_cc|components|info|unconverged_nodes" not in counts


def test_too_few_rounds_are_reported_and_never_merge_components(fast_config, tmp_path):
    chains = long_chain(300, "a", seed=2) + long_chain(300, "b", seed=3)
    labels, counts = run_components(fast_config, chains, 2, tmp_path)
    assert counts["test_cc|components|info|unconverged_nodes"] > 0
    assert all(label[0] == node[0] for node, label in labels.items())  # labels stay inside their component
    roots = {node for node, label in labels.items() if node == label}
    assert {"a00000", "b00000"} <= roots  # each component keeps its smallest node, never loses every node


def test_components_reject_a_bad_bound():
    with pytest.raises(ValueError):
        ConnectedComponents(0)


def _words(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _doc(doc_id: str, text: str, date: str = "2024-01-01T00:00:00Z") -> Document:
    return Document(doc_id=doc_id, url=f"https://site.test/{doc_id}", nodes=[Node(text=text)], warc_date=date)


def _transitive_triple() -> tuple[str, str, str]:
    """Texts A, B, C with A~B and B~C sharing LSH band keys and A, C sharing none (found, not assumed)."""
    hasher = DEFAULT_HASHER
    for seed in range(50):
        words = _words(seed, 1200)
        texts = (" ".join(words[0:1000]), " ".join(words[100:1100]), " ".join(words[200:1200]))
        keys = [set(hasher.band_keys(hasher.signature(t))) for t in texts]
        if keys[0] & keys[1] and keys[1] & keys[2] and not keys[0] & keys[2]:
            return texts
    raise AssertionError("no transitive triple found")


@pytest.fixture
def run_near(tmp_path):
    runs = iter(range(100))

    def run(config, docs: list[Document]) -> tuple[list[Document], dict]:
        out = tmp_path / f"run{next(runs)}"
        pipeline = make_pipeline([], runner(config))
        near = NearDedupSettings.from_config(config["dedup"]["near"], "dedup.near")
        pipeline | beam.Create(docs) | DedupNear(near) | Collect(out)
        result = pipeline.run()
        result.wait_until_finish()
        table = stage_table(query_counts(result))
        assert unbalanced(table) == []
        return collected(out), table["dedup_near"]

    return run


@pytest.fixture
def near_config(fast_config):
    fast_config["dedup"]["near"]["max_rounds"] = 6
    return fast_config


def test_transitive_chains_land_in_one_cluster(near_config, run_near):
    a, b, c = _transitive_triple()
    hasher = DEFAULT_HASHER
    assert estimated_jaccard(hasher.signature(a), hasher.signature(c)) < hasher.threshold()  # A ≁ C
    triple = [_doc("c", c, "2024-03-01T00:00:00Z"), _doc("b", b, "2024-02-01T00:00:00Z"),
              _doc("a", a, "2024-04-01T00:00:00Z")]
    words = _words(4, 4000)
    chain = [_doc(f"d{i:03d}", " ".join(words[i * 100:i * 100 + 1000])) for i in range(30)]  # each shifted 100 words
    first, last = (set(hasher.band_keys(hasher.signature(d.text))) for d in (chain[0], chain[-1]))
    assert not first & last  # the ends of the long chain have no words in common: only the chain links them
    kept, stage = run_near(near_config, triple + chain + [_doc("u", " ".join(_words(999, 800)))])
    # {A, B, C} is one cluster kept as B (crawled first); the 30-document chain is one cluster kept as d000.
    assert sorted(d.doc_id for d in kept) == ["b", "d000", "u"]
    assert stage["clusters"]["info"] == {"size_3-5": 1, "size_11-100": 1}
    assert stage["documents"]["dropped"] == {"near_duplicate": 31}
    assert "unconverged_nodes" not in stage["components"]["info"]


def _candidate_below(threshold: float) -> tuple[str, str]:
    """Two texts that share an LSH band but whose estimated Jaccard is below `threshold` (found, not assumed)."""
    hasher = DEFAULT_HASHER
    for seed in range(100, 200):
        words = _words(seed, 1300)
        x, y = " ".join(words[0:1000]), " ".join(words[300:1300])
        sx, sy = hasher.signature(x), hasher.signature(y)
        if set(hasher.band_keys(sx)) & set(hasher.band_keys(sy)) and estimated_jaccard(sx, sy) < threshold:
            return x, y
    raise AssertionError("no borderline pair found")


def test_pair_verification_keeps_chains_and_rejects_weak_candidates(near_config, run_near):
    near_config["dedup"]["near"]["verify_threshold"] = 0.7
    a, b, c = _transitive_triple()
    x, y = _candidate_below(0.7)
    kept, stage = run_near(near_config, [_doc("a", a), _doc("b", b), _doc("c", c), _doc("x", x), _doc("y", y)])
    assert sorted(d.doc_id for d in kept) == ["a", "x", "y"]  # verified A-B and B-C still chain A to C
    assert stage["components"]["info"]["rejected_pairs"] >= 1
