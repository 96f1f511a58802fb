"""torch threads inside the codec (``VCINR_NUM_THREADS``, default 1, the caller's count
restored) and in the pipelines' Ray workers (the CPUs Ray assigned)."""

from __future__ import annotations

import threading

import pytest
import torch
from _vcinr_tiny import QUALITY, fields, tiny_artifact

from vcinr_sci.codec.numcodecs import VCINRCodec
from vcinr_sci.errors import CodecError
from vcinr_sci.model.loaded import LoadedModel

pytestmark = pytest.mark.usefixtures("isolated_model_lookup")


@pytest.fixture
def caller_threads():
    """The test thread runs with 2 torch threads (as torch's default on 2 cores) and gets
    its own count back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


@pytest.fixture
def seen(monkeypatch):
    """torch's thread count inside each encode (adaptation and coding) and INR
    evaluation (decode)."""
    counts = {"encode": [], "evaluate": []}
    for name in counts:
        original = getattr(LoadedModel, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            counts[_name].append(torch.get_num_threads())
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(LoadedModel, name, spy)
    return counts


@pytest.mark.parametrize("env, inside", [(None, 1), ("1", 1), ("2", 2), ("0", 2)])
def test_codec_runs_with_the_knob_and_restores_the_caller(caller_threads, seen, monkeypatch, env, inside):
    if env is None:
        monkeypatch.delenv("VCINR_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("VCINR_NUM_THREADS", env)
    codec = VCINRCodec.for_model(tiny_artifact(), QUALITY)
    x = fields(2).air_temperature.values
    codec.decode(codec.encode(x))
    assert seen["encode"] and set(seen["encode"]) == {inside}
    assert seen["evaluate"] and set(seen["evaluate"]) == {inside}
    assert torch.get_num_threads() == caller_threads


def test_chunk_threads_keep_their_own_count(caller_threads, seen, monkeypatch):
    """Chunks decoded in two threads at once (as Zarr and dask do) each run with the
    knob's count; the caller's count is untouched."""
    monkeypatch.delenv("VCINR_NUM_THREADS", raising=False)
    codec = VCINRCodec.for_model(tiny_artifact(), QUALITY)
    enc = codec.encode(fields(2).air_temperature.values)
    seen["evaluate"].clear()
    barrier = threading.Barrier(2)

    def decode():
        barrier.wait()
        codec.decode(enc)

    workers = [threading.Thread(target=decode) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(seen["evaluate"]) == 2 and set(seen["evaluate"]) == {1}
    assert torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("bad", ["two", "-1", "1.5"])
def test_bad_knob_refused(monkeypatch, bad):
    monkeypatch.setenv("VCINR_NUM_THREADS", bad)
    codec = VCINRCodec.for_model(tiny_artifact(), QUALITY)
    with pytest.raises(CodecError, match="VCINR_NUM_THREADS"):
        codec.encode(fields(1).air_temperature.values)


@pytest.mark.parametrize("cpus, expected", [(2, 2), (1, 1), (0, 1)])
def test_ray_actor_takes_its_cpus(ray_session, cpus, expected):
    """An actor holding ``cpus`` CPUs runs torch and the codec with that many threads
    (at least 1), whatever OMP_NUM_THREADS the driver's environment set."""
    import os

    from pipelines.ray_setup import use_assigned_cpus

    @ray_session.remote(num_cpus=cpus)
    class Worker:
        def threads(self):
            n = use_assigned_cpus()
            return n, torch.get_num_threads(), os.environ["VCINR_NUM_THREADS"]

    actor = Worker.remote()
    try:
        assert ray_session.get(actor.threads.remote()) == (expected, expected, str(expected))
    finally:
        ray_session.kill(actor)
