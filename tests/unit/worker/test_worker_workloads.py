from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trainyard.worker.corpus.generate import generate
from trainyard.worker.data import ByteWindows, load_corpus
from trainyard.worker.workloads import build_workload

sys.path.insert(0, str(Path(__file__).parent))


def test_corpus_is_shipped_with_its_licence_and_is_reproducible() -> None:
    corpus = load_corpus()
    assert 100_000 <= len(corpus) <= 300_000
    assert b"Licence: Apache-2.0" in corpus[:400]
    assert corpus.decode() == generate(), "the shipped corpus must equal the generator's output"


def test_byte_windows_shift_targets_by_one() -> None:
    ds = ByteWindows(b"abcdefghij", block_size=4, stride=2)
    x, y = ds[1]
    assert bytes(x.tolist()) == b"cdef"
    assert bytes(y.tolist()) == b"defg"
    assert len(ds) == 3


def test_user_workload_contract() -> None:
    workload = build_workload("user_workload:regression")
    assert len(workload.dataset) == 512
    x, y = workload.dataset[0]
    assert workload.loss_fn(workload.model(x[None]), y[None]).ndim == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet", "not one of gpt, cnn nor of the form module:function"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("user_workload:missing", "has no callable 'missing'"),
        ("user_workload:not_a_triple", r"must return \(model, dataset, loss_fn\)"),
    ],
)
def test_bad_workload_specs_are_explained(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_workload(spec)
