"""Multi-process ProDA (torchrun-style, two CPU processes over gloo): prototype updates are gathered
in rank order, so every process holds the same prototypes, and DDP keeps the students identical."""
import logging
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from dacommon.distributed import all_gather_rows
from proda.models.adaptation_modelv2 import CustomModel
from proda.models.prototypes import update_prototypes
from test_proda_models import STAGE1, batch, make_opt, weak_params

K, WORLD = 5, 2


def rank_vectors(rank):
    """A different number of (id, vector) pairs on each process, with repeated classes."""
    g = torch.Generator().manual_seed(rank)
    count = 3 + 2 * rank
    return torch.randn(count, 8, generator=g), torch.randint(0, K, (count,), generator=g)


def join(rank, init_file):
    """Join a two-process gloo group through a file (no network port needed)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)


def gather_worker(rank, init_file, out_dir):
    """Gather every rank's pairs and apply them; save the resulting prototypes."""
    join(rank, init_file)
    vectors, ids = all_gather_rows(*rank_vectors(rank))
    protos, counts = torch.zeros(K, 8), torch.full((K,), 98.0)
    update_prototypes(protos, counts, vectors, ids, 0.2, start_mean=True)
    torch.save({"protos": protos, "counts": counts, "ids": ids}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def step_worker(rank, init_file, out_dir):
    """One DDP stage-1 step with moving prototypes on this rank's own images."""
    join(rank, init_file)
    torch.manual_seed(0)  # the same initial networks and prototypes everywhere
    model = CustomModel(make_opt(*STAGE1, "--proto_momentum", "0.1"), logging.getLogger("ddp"))
    model.objective_vectors = torch.randn(13, 256)
    images, labels, params = batch(seed=rank)
    lpsoft = F.softmax(torch.randn(2, 13, 32, 32, generator=torch.Generator().manual_seed(rank)) * 3, 1)
    model.train()
    model.optimizer_zerograd()
    model.stage1_step({"img": images, "label": labels},
                      {"img": images, "img_strong": images.flip(3), "params": params, "lpsoft": lpsoft,
                       "img_full": torch.randn(2, 3, 48, 48), "weak_params": weak_params()})
    torch.save({"protos": model.objective_vectors, "counts": model.objective_vectors_num,
                "student": dict(model.BaseNet.named_parameters()), "ddp": type(model.BaseNet_DP).__name__},
               os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def run_two(worker, tmp_path, start_method="spawn"):
    """Run `worker` on two processes and load what each saved."""
    mp.start_processes(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method=start_method)
    return [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(WORLD)]


def test_gathered_prototype_updates_are_identical_and_in_rank_order(tmp_path):
    results = run_two(gather_worker, tmp_path, start_method="fork")  # fork: no re-import, a second or two
    vectors = torch.cat([rank_vectors(r)[0] for r in range(WORLD)])
    ids = torch.cat([rank_vectors(r)[1] for r in range(WORLD)])
    protos, counts = torch.zeros(K, 8), torch.full((K,), 98.0)
    update_prototypes(protos, counts, vectors, ids, 0.2, start_mean=True)  # one process, whole batch
    for result in results:
        assert torch.equal(result["ids"], ids)
        assert torch.equal(result["protos"], protos) and torch.equal(result["counts"], counts)


@pytest.mark.slow
def test_ddp_stage1_step_keeps_students_and_prototypes_identical(tmp_path):
    first, second = run_two(step_worker, tmp_path)
    assert first["ddp"] == "DistributedDataParallel"
    assert (first["counts"] > 0).any() and torch.equal(first["counts"], second["counts"])
    assert torch.equal(first["protos"], second["protos"])
    # parameters only: CPU runs use plain BatchNorm2d, whose running statistics stay per process
    assert all(torch.equal(v, second["student"][k]) for k, v in first["student"].items())


class Provider:
    """Stands in for the endless source provider: a position per process."""

    def __init__(self, rank):
        self.rank = rank

    def state_dict(self):
        return {"epoch": 0, "iteration": 3 + self.rank}

    def load_state_dict(self, state):
        self.loaded = state


def process_state_worker(rank, init_file, out_dir):
    """Each process's random state and BN statistics differ; gather them on rank 0 in rank order."""
    from types import SimpleNamespace
    from proda.checkpoint import gather_process_states, process_state
    join(rank, init_file)
    torch.manual_seed(100 + rank)
    net = torch.nn.BatchNorm1d(3)
    net(torch.randn(4, 3))  # running statistics of this process's own batch
    states = gather_process_states(process_state(SimpleNamespace(source_train_loader=Provider(rank)), {"net": net}))
    if rank == 0:
        torch.save(states, os.path.join(out_dir, "states.pt"))
    torch.save({"rng": torch.get_rng_state(), "mean": net.running_mean}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_every_process_state_is_gathered_in_rank_order(tmp_path):
    """What a torchrun checkpoint saves per process: its own random state, data
    position and buffers, so that each process of a resumed run starts where it stood."""
    own = run_two(process_state_worker, tmp_path, start_method="fork")
    states = torch.load(tmp_path / "states.pt", weights_only=True)
    assert len(states) == WORLD and not torch.equal(states[0]["rng"]["torch"], states[1]["rng"]["torch"])
    for rank, state in enumerate(states):
        assert torch.equal(state["rng"]["torch"], own[rank]["rng"])
        assert torch.equal(state["buffers"]["net"]["running_mean"], own[rank]["mean"])
        assert state["data"]["source"]["iteration"] == 3 + rank
