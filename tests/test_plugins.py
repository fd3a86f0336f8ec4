"""Every registered plug-in keeps its kind's contract (issue 15, item 5): sources, exporters,
labeling backends and consensus methods, each parametrized over its registry, so a new entry is
tested the moment it registers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from PIL import Image as PILImage

from imgnet_build.errors import BadInput
from imgnet_build.labeling.consensus import ConsensusSettings, VoteTable
from imgnet_build.registry import Registry, registries

REGISTRIES = registries()


def entries(kind: str) -> list[str]:
    return sorted(REGISTRIES[kind])


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_one_registry_shape_for_every_kind_of_plug_in():
    assert set(REGISTRIES) == {"source", "exporter", "backend", "consensus"}
    for kind, registry in REGISTRIES.items():
        assert isinstance(registry, Registry) and registry, kind
        for name, plugin in registry.items():
            assert plugin.name == name, (kind, name)
    assert {"urls", "dir", "wikimedia", "openverse", "flickr"} <= set(REGISTRIES["source"])
    assert {"imagefolder", "ilsvrc", "hf", "webdataset"} <= set(REGISTRIES["exporter"])
    assert {"local", "simulated", "mturk"} <= set(REGISTRIES["backend"])
    assert {"majority", "dawid-skene", "dynamic"} <= set(REGISTRIES["consensus"])


@pytest.mark.parametrize("name", entries("source"))
def test_source_contract(name):
    source = REGISTRIES["source"][name]
    assert isinstance(source.local, bool) and isinstance(source.searches, bool)
    assert parameters(source.__init__)[:2] == ["self", "argument"]
    assert parameters(source.propose)[:3] == ["self", "categories", "per_category"]
    assert inspect.isgeneratorfunction(source.propose) or "Iterator" in str(inspect.signature(source.propose))


@pytest.mark.parametrize("name", entries("exporter"))
def test_exporter_contract(name):
    exporter = REGISTRIES["exporter"][name]
    PILImage.init()
    assert isinstance(exporter.formats, frozenset) and exporter.formats <= set(PILImage.registered_extensions().values())
    assert exporter.fallback in exporter.formats and exporter.fallback in PILImage.SAVE
    assert parameters(exporter.write) == ["self", "items", "classes", "out", "writer"]
    exporter()  # every setting has a default


@pytest.mark.parametrize("name", entries("backend"))
def test_backend_contract(name, workspace):
    backend = REGISTRIES["backend"][name](workspace, {})
    for flag in ("simulated", "answers_itself", "costs_money"):
        assert isinstance(getattr(backend, flag), bool), flag
    with workspace.session() as session:
        backend.publish(session, [])  # nothing to publish: no call, no error
        try:
            answer = backend.check_pairs(session, [])
        except BadInput as exc:  # a backend that cannot work in this workspace says why (mturk: no public URLs)
            assert str(exc)
        else:
            assert answer is None
    assert parameters(backend.collect) == ["workspace"]


@pytest.mark.parametrize("name", entries("consensus"))
def test_consensus_method_contract(name):
    """Ten workers agree on every pair: each method accepts the yes pairs and rejects the no pairs."""
    answers = [True, True, False, False, True]
    votes = [(pair, worker, answer) for pair, answer in enumerate(answers) for worker in range(10)]
    pair, worker, answer = zip(*votes, strict=True)
    table = VoteTable.build(pair, worker, answer, [0] * len(answers))
    result = REGISTRIES["consensus"][name](ConsensusSettings()).fit(table)
    assert list(result.status) == ["accepted" if a else "rejected" for a in answers]
    assert result.posterior.shape == (len(answers),) and np.all((result.posterior >= 0) & (result.posterior <= 1))
    assert np.all(result.posterior[np.array(answers)] > 0.5) and np.all(result.posterior[~np.array(answers)] < 0.5)
    assert result.worker_accuracy.shape == (10,)
