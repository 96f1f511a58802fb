"""DDP correctness of meta-training: 2 workers (torch.distributed over gloo, in 2
processes, wrapped in DDP as Ray Train's ``prepare_model`` does) sharing out a global
batch make the same outer updates as 1 worker with the whole batch."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch

from vcinr_sci.config import Config, load_config
from vcinr_sci.data.items import load_dataset
from vcinr_sci.errors import ConfigError
from vcinr_sci.model.artifact import build_model
from vcinr_sci.model.training import global_batch_size, outer_step, sample_batch, seed_everything

REPO = Path(__file__).resolve().parents[1]
STEPS = 2
SPAWN_TIMEOUT_S = 300  # seconds on a loaded 2-core machine; a hang fails instead of stalling the suite


def _config() -> Config:
    # An odd global batch: the workers' shares differ (3 and 2 items), so a plain mean of
    # their means would weight the items of the smaller share more.
    return load_config(REPO / "configs" / "tiny.yaml", {"meta.batch_size": 5})


def _train(rank: int, world: int, port: int, out: str) -> None:
    """``STEPS`` outer steps as worker ``rank`` of ``world``; rank 0 saves the gradients
    of the first step and the final weights to ``out``."""
    import gc
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = _config()
    seed_everything(cfg.train.seed)
    data = load_dataset(cfg.data)
    items = data.items("train")
    model = build_model(cfg, data.grid)
    wrapped = DistributedDataParallel(model) if world > 1 else model
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.meta.outer_lr)
    grads = {}
    for step in range(1, STEPS + 1):
        batch = sample_batch(items, cfg, step, rank, world)
        outer_step(wrapped, optimiser, batch, cfg.meta.grad_clip, world, global_batch_size(items, cfg))
        if step == 1:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    if rank == 0:
        torch.save({"grads": grads, "weights": model.state_dict()}, out)
    if world > 1:
        # DDP's reducer holds the process group. Freed after destroy_process_group, it
        # freed the group too, joining gloo's threads while holding the GIL that one of
        # them waited for (to free its last work): a hang. Freed first, the group ends
        # in destroy_process_group, which lets go of the GIL.
        del wrapped
        gc.collect()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_make_the_same_outer_updates_as_one(tmp_path, one_torch_thread):
    import torch.multiprocessing as mp

    cfg = _config()
    items = load_dataset(cfg.data).items("train")
    shares = [sample_batch(items, cfg, 1, rank, 2)[1].shape[0] for rank in range(2)]
    assert shares == [3, 2]

    _train(0, 1, 0, str(tmp_path / "one.pt"))
    workers = mp.spawn(_train, args=(2, _free_port(), str(tmp_path / "two.pt")), nprocs=2, join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not workers.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for proc in workers.processes:
                proc.kill()
            pytest.fail(f"the 2 DDP workers did not end within {SPAWN_TIMEOUT_S} s")
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("one", "two"))
    for name, g in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], g, rtol=1e-5, atol=1e-7, msg=f"gradient of {name}")
    # Adam divides by the root of the squared gradient: where a gradient is near 0 (the
    # tiny model's gradients reach down to 1e-11), the summation order's
    # float noise moves a weight by up to ~1e-6 (measured 2.3e-6 at lr 1e-3). A wrong
    # share of the batch shows in the gradients above; here, 1 % of a step is the bar.
    step_tolerance = 1e-2 * cfg.meta.outer_lr
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=step_tolerance, msg=f"weights {name}")
    seed_everything(cfg.train.seed)
    init = build_model(cfg, load_dataset(cfg.data).grid).state_dict()
    assert max(float((one["weights"][n] - w).abs().max()) for n, w in init.items()) > 1e-4  # the steps did move it


def test_a_batch_smaller_than_the_workers_is_refused(tmp_path):
    from pipelines.meta_train import fit

    cfg = load_config(REPO / "configs" / "tiny.yaml", {"meta.batch_size": 1, "train.num_workers": 2})
    cfg.train.storage_path = str(tmp_path / "runs")
    with pytest.raises(ConfigError, match="meta.batch_size"):
        fit(cfg)
