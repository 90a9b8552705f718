"""Data-parallel training: sharded samplers (unit), and torchrun with 2 gloo processes vs one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler

from fgvc_lib.data.samplers import ClassAwareSampler
from fgvc_lib.distributed import ShardedSampler, gather_interleaved, local_batch_size, shard_loader_options

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
LABELS = np.repeat(np.arange(4), [40, 20, 10, 6])


def _shards(make, world, pad=True, epoch=None):
    shards = []
    for rank in range(world):
        sampler = ShardedSampler(make(), rank, world, pad=pad)
        if epoch is not None:
            sampler.set_epoch(epoch)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    return shards


@pytest.mark.parametrize("kind", ["uniform", "reversed", "balanced", "shuffle"])
@pytest.mark.parametrize("world", [2, 3])
def test_sharded_batches_are_the_single_process_batches(kind, world):
    def make():
        if kind == "shuffle":
            return RandomSampler(range(len(LABELS)), generator=torch.Generator().manual_seed(7))
        return ClassAwareSampler(LABELS, kind, generator=torch.Generator().manual_seed(7))

    single = list(make())
    shards = _shards(make, world)
    per_rank = 4  # global batch 4 * world
    for step in range(len(shards[0]) // per_rank):
        union = sorted(i for s in shards for i in s[step * per_rank : (step + 1) * per_rank])
        assert union == sorted(single[step * per_rank * world : (step + 1) * per_rank * world])
    assert {len(s) for s in shards} == {-(-len(single) // world)}  # padded: equal step counts


def test_sharded_class_aware_sampler_follows_set_epoch():
    def make():
        return ClassAwareSampler(LABELS, "reversed", generator=torch.Generator().manual_seed(1))

    a, b = _shards(make, 2, epoch=0), _shards(make, 2, epoch=1)
    assert a != b
    inner = make()
    inner.set_epoch(1)
    assert sorted(b[0] + b[1]) == sorted(inner)


def test_eval_shards_cover_every_item_once():
    shards = _shards(lambda: SequentialSampler(range(19)), 2, pad=False)
    assert shards == [list(range(0, 19, 2)), list(range(1, 19, 2))]


def test_rank_out_of_range_and_one_process_is_untouched():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        ShardedSampler(SequentialSampler(range(4)), 2, 2)
    assert local_batch_size(6) == 6  # one process: unchanged
    # without a process group nothing changes, so single-process code is untouched
    assert shard_loader_options(range(4), {"batch_size": 3, "shuffle": True}) == {"batch_size": 3, "shuffle": True}
    assert torch.equal(gather_interleaved(torch.arange(3)), torch.arange(3))


def _torchrun(args, env, timeout=240):
    """torchrun in its own process group: on a timeout the workers are killed too, not left behind."""
    proc = subprocess.Popen(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", *args], env=env, cwd=env["PWD"], text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def run_env(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FGVC_OUTPUTS": str(tmp_path / "outputs"), "PWD": str(tmp_path)}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_torchrun_two_gloo_processes_match_one_process(tmp_path, run_env):
    """The Trainer under DDP (shuffling, reversed, class-balanced samplers and BBN's pairs + hand-averaged
    gradients): every epoch's loss/accuracy and the gathered predictions equal one process's."""
    worker = str(HERE / "ddp_worker.py")
    single = subprocess.run([sys.executable, worker, str(tmp_path / "one.json")], env=run_env,
                            capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = _torchrun([worker, str(tmp_path / "two.json")], run_env)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for kind in ("shuffle", "reversed", "balanced", "bbn"):
        assert one[kind]["world_size"] == 1 and two[kind]["world_size"] == 2
        assert one[kind]["steps_per_epoch"] == two[kind]["steps_per_epoch"] == 9  # global batch 8, 76 images
        for a, b in zip(one[kind]["history"], two[kind]["history"], strict=True):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5"):
                assert b[key] == pytest.approx(a[key], abs=1e-4), (kind, a["epoch"], key)
        assert two[kind]["targets"] == one[kind]["targets"]  # gathered back in dataset order (19 items)
        np.testing.assert_allclose(two[kind]["logits"], one[kind]["logits"], atol=1e-4)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_torchrun_bird_experiment_only_rank0_writes(tmp_path, run_env):
    run_dir = tmp_path / "outputs" / "runs" / "bird" / "ddp"
    args = ["-m", "fgvc_lib.train", "bird", "-p", "run_dir", str(run_dir), "-p", "device", "cpu"]
    for key, value in dict(synth_classes=3, synth_per_class=12, synth_size=48, img_size=32, batch_size=8,
                           epochs=2, num_workers=0, cam_images=2, progress="false").items():
        args += ["-p", key, str(value)]
    result = _torchrun(args, run_env)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 reports, rank 1 does not
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epochs_run"] == 2
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "figures").is_dir()
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["ddp"]  # no second run folder from rank 1
    assert not list(run_dir.rglob(".*.tmp-*"))
    shutil.rmtree(tmp_path / "outputs" / "data", ignore_errors=True)
