"""DistributedDataParallel training with 2 CPU processes (gloo): replicas stay identical, only rank 0 writes."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from audio_vqvae.config import ExperimentConfig, apply_overrides
from audio_vqvae.training.launch import free_port
from audio_vqvae.training.logs import read_metrics
from audio_vqvae.training.recipe import qualify_overrides

from helpers import REPO, make_tiny_corpus, subprocess_env, tiny_overrides

STEPS = 8


def _worker(rank: int, port: int, corpus_root: str, cache_dir: str, run_dir: str, results: str) -> None:
    from audio_vqvae.training.distributed import init_distributed, shutdown_distributed
    from audio_vqvae.training.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    config = apply_overrides(ExperimentConfig.from_yaml(REPO / "recipes/vctk/conf/small.yaml"), qualify_overrides(
        tiny_overrides(corpus_root, cache_dir, max_steps=STEPS, valid_every=4, audio_every=8, checkpoint_every=4)))
    context = init_distributed("cpu")
    try:
        trainer = Trainer(config, run_dir, context=context, progress=False)
        first_batch = next(iter(trainer.train_loader))["audio"]
        trainer.fit()
        torch.save({"state": trainer.model.state_dict(), "first_batch": first_batch,
                    "world_size": torch.distributed.get_world_size()}, os.path.join(results, f"rank{rank}.pt"))
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_replicas_and_only_rank0_writes(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    run_dir, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.spawn(_worker, args=(free_port(), str(corpus), str(tmp_path / "cache"), str(run_dir), str(results)),
             nprocs=2, join=True)
    first, second = (torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert first["world_size"] == second["world_size"] == 2
    # A distributed sampler: each rank trains on its own shard, yet ...
    assert not torch.equal(first["first_batch"], second["first_batch"])
    # ... the weights, the codebook and its EMA statistics are identical on both replicas.
    for name, tensor in first["state"].items():
        assert torch.equal(tensor, second["state"][name]), name
    assert bool(first["state"]["quantizer.initialized"])

    # Only rank 0 wrote: one event file, each step logged once, checkpoints of rank 0's replica.
    assert len(list(run_dir.glob("events.out.tfevents*"))) == 1
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl", "train")] == list(range(1, STEPS + 1))
    checkpoint = torch.load(run_dir / "checkpoints" / f"step-{STEPS:08d}.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2  # both ranks' random streams
    for name, tensor in first["state"].items():
        assert torch.equal(tensor, checkpoint["model"][name]), name
    assert "2 process(es)" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_torchrun_runs_the_recipe_with_two_processes(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "recipes/vctk/train.py"), "--config", str(REPO / "recipes/vctk/conf/small.yaml"),
               "--out", str(out), "--no-progress",
               *tiny_overrides(corpus, tmp_path / "cache", max_steps=6, valid_every=3, audio_every=6,
                               checkpoint_every=3)]
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=str(REPO))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished at step 6" in result.stdout
    assert len(list(out.glob("events.out.tfevents*"))) == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003.pt", "step-00000006.pt"]
    assert "2 process(es)" in (out / "train.log").read_text()


def _teardown_worker(rank: int, port: int, corpus_root: str, cache_dir: str, run_dir: str, results: str) -> None:
    """``train()`` under 2 gloo processes, with ``destroy_process_group`` instrumented.

    At destruction a gloo worker thread is left about to need the GIL (a collective whose completion
    callback, run on that thread, sleeps without the GIL and then takes it back): the state in which
    freeing a DDP reducer that owns the process group deadlocks, as the last collective's tensors did
    by chance in long torchrun runs.
    """
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from audio_vqvae.training import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    config = apply_overrides(ExperimentConfig.from_yaml(REPO / "recipes/vctk/conf/small.yaml"), qualify_overrides(
        tiny_overrides(corpus_root, cache_dir, max_steps=3, valid_every=2, audio_clips=0, checkpoint_every=2)))
    real_destroy = dist.destroy_process_group
    seen = {}

    def destroy(*args, **kwargs):
        seen["live_ddp"] = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
        work = dist.all_reduce(torch.ones(1), async_op=True)
        work.get_future().then(lambda fut: time.sleep(0.3))
        real_destroy(*args, **kwargs)

    dist.destroy_process_group = destroy
    result = train(config, run_dir, progress=False)
    time.sleep(0.5)  # let the callback return before the interpreter exits
    with open(os.path.join(results, f"rank{rank}.json"), "w") as handle:
        json.dump({"status": result.status, "step": result.step, **seen}, handle)


@pytest.mark.slow
def test_ranks_leave_train_without_deadlocking_in_process_group_teardown(tmp_path):
    """Regression: rank 1 sometimes slept forever after training (torchrun never returned).

    Its DistributedDataParallel reducer was freed after ``destroy_process_group`` and was then the
    process group's last owner: gloo's destructor ran with the GIL held and joined a worker thread that
    needed the GIL. ``Trainer.fit`` now drops the wrapper before the group is destroyed.
    """
    corpus = make_tiny_corpus(tmp_path / "corpus")
    results = tmp_path / "results"
    results.mkdir()
    context = mp.start_processes(_teardown_worker, nprocs=2, join=False, start_method="spawn", args=(
        free_port(), str(corpus), str(tmp_path / "cache"), str(tmp_path / "run"), str(results)))
    deadline = time.monotonic() + 60
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("a training process did not exit (deadlock in process-group teardown?); finished: "
                            f"{sorted(p.name for p in results.iterdir())}")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    for rank in range(2):
        record = json.loads((results / f"rank{rank}.json").read_text())
        assert record == {"status": "finished", "step": 3, "live_ddp": 0}, (rank, record)
