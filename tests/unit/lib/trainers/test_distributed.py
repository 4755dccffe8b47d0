"""Distributed training (lib.trainers.distributed): the per-rank split, the request plumbing, and real runs on
two CPU processes on gloo, spawned by the trainer and launched by torchrun, against one process."""

import json
import math
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lib.trainers.distributed import check_processes, partition, torchrun_env
from tests.helpers.app import ROOT

TASK = "tumor_gate"  # the fastest classifier on the sample data (57 training, 15 validation slices)
CONF = {f"{TASK}_image_size": "32", f"{TASK}_widths": "4,8,8,8"}
REQUEST = {"max_epochs": 1, "dataset": "Dataset", "seed": 0, "early_stop_patience": 0}
SCRIPT = ROOT / "tests" / "helpers" / "torchrun_train.py"


# ------------------------------------------------------------------------------------------- per-rank split


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 17, 57, 100])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [None, 1, 4, 8])
def test_partition_gives_each_item_to_one_rank(count, world_size, batch_size):
    items = list(range(count))
    parts = partition(items, world_size, batch_size)
    assert len(parts) == world_size
    if count < world_size:  # fewer items than ranks: every rank gets them all (MONAI Label's behaviour)
        assert parts == [items] * world_size
        return
    distinct = [set(p) for p in parts]
    assert set().union(*distinct) == set(items)
    assert sum(len(d) for d in distinct) == count  # disjoint
    assert max(len(d) for d in distinct) - min(len(d) for d in distinct) <= 1
    repeats = sum(len(p) for p in parts) - count
    even = len({math.ceil(len(d) / batch_size) for d in distinct}) == 1 if batch_size else True
    assert repeats == (0 if even else sum(1 for d in distinct if len(d) < max(len(e) for e in distinct)))
    assert repeats <= world_size - 1
    if batch_size:  # DDP: the same number of iterations on every rank
        assert len({math.ceil(len(p) / batch_size) for p in parts}) == 1


def test_partition_repeats_nothing_where_monai_would_pad():
    assert [len(p) for p in partition(list(range(57)), 2, 8)] == [29, 28]  # 4 batches each, no repeat
    assert [len(p) for p in partition(list(range(17)), 2, 8)] == [9, 9]  # 2 batches against 1: rank 1 repeats one
    assert partition(list(range(17)), 2, 8)[1][-1] == 1


@pytest.mark.parametrize(
    "world_size, batch_size, name",
    [
        (0, None, "world_size"),
        (2.0, None, "world_size"),
        (True, None, "world_size"),
        (2, 0, "batch_size"),
        (2, "8", "batch_size"),
    ],
)
def test_partition_checks_its_arguments(world_size, batch_size, name):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        partition([1, 2, 3], world_size, batch_size)


# ------------------------------------------------------------------------------------------- request plumbing


@pytest.mark.parametrize("value", [0, -1, 1.5, "two", True, [2]])
def test_processes_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=re.escape(f"processes must be an integer >= 1, got {value!r}")):
        check_processes(value)
    assert check_processes(None) is None and check_processes(2) == 2 and check_processes("3") == 3


def _trainer(tmp_path):
    from main import discover_configs

    config = discover_configs()[TASK]()
    config.init(TASK, str(tmp_path / "model"), CONF, None)
    return config.trainer()


def test_cpu_processes_use_monai_labels_spawn_path_on_gloo(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    trainer = _trainer(tmp_path)
    request, rendezvous = trainer._spawn_request({"processes": 3}, 3)
    assert request["multi_gpu"] is True and request["gpus"] == "0,1,2"  # MONAI Label spawns one process per entry
    assert request["distributed_backend"] == "gloo" and request["distributed_url"].startswith(f"file://{rendezvous}")
    os.rmdir(rendezvous)
    assert trainer._spawn_request({"processes": 1}, 1) == ({"processes": 1, "multi_gpu": False}, None)
    with pytest.raises(ValueError, match="processes=2 needs multi_gpu true"):
        trainer._spawn_request({"processes": 2, "multi_gpu": False}, 2)
    trainer.last_run = SimpleNamespace(context=SimpleNamespace(engine=lambda: None))  # a finished run's context
    assert pickle.loads(pickle.dumps(trainer)).last_run is None  # does not pickle: spawned processes get none


def test_torchrun_environment_is_read_only_when_world_size_is_above_one(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_env() is None
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT unset"):
        torchrun_env()
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "node0")
    monkeypatch.setenv("MASTER_PORT", "29400")
    assert torchrun_env() == {"rank": 5, "world_size": 8, "local_rank": 1}


# ------------------------------------------------------------------------------------------- real runs


def _train(datastore_dir, model_dir, request):
    from monailabel.config import settings

    from lib.datastore import MRIDatastore
    from main import discover_configs

    config = discover_configs()[TASK]()
    config.init(TASK, str(model_dir), CONF, None)
    datastore = MRIDatastore(str(datastore_dir), extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)
    return config, config.trainer()(request, datastore)


def _whole_validation(config, datastore_dir, checkpoint):
    """The key metric of ``checkpoint`` on ALL validation items (the datastore's ``split.json``), in this one
    process, with the trainer's own validation transforms and metric; and those items."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose
    from monailabel.config import settings

    from lib.datastore import MRIDatastore
    from lib.networks import build_network

    trainer = config.trainer()
    sides = json.loads((Path(datastore_dir) / "split.json").read_text())["subjects"]
    datastore = MRIDatastore(str(datastore_dir), extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)
    items = [i for i in trainer.items(datastore) if sides.get(str(i["subject"])) == "val"]
    loader = DataLoader(Dataset(items, Compose(trainer.val_pre_transforms(None))), batch_size=16)
    context = SimpleNamespace(
        network=build_network(config.network_spec),
        device=torch.device("cpu"),
        evaluator=SimpleNamespace(data_loader=loader),
    )
    return trainer.evaluate_checkpoint(context, str(checkpoint))["value"], items


def _tolerance(items, classes: int) -> float:
    """Two standard errors of a mean of per-class recalls (the key metric, balanced accuracy) over these validation
    items, at its largest (recall 0.5 in each class present): (2 / C) * sqrt(sum_c 0.25 / n_c)."""
    counts = {}
    for item in items:
        counts[int(item["label"])] = counts.get(int(item["label"]), 0) + 1
    return 2 / classes * math.sqrt(sum(0.25 / n for n in counts.values()))


def test_two_cpu_processes_see_the_data_once_and_score_like_one_process(datastore_dir, tmp_path, capfd):
    one_config, one = _train(datastore_dir, tmp_path / "one", dict(REQUEST, name="one", train_batch_size=16))
    capfd.readouterr()
    # 2 processes x 8 items per batch: the same effective batch (16) and number of optimizer steps as one process
    two_config, two = _train(
        datastore_dir, tmp_path / "two", dict(REQUEST, name="two", train_batch_size=8, multi_gpu=True, processes=2)
    )
    captured = capfd.readouterr()

    n_train = one["distributed"]["train_items_per_rank"][0]
    card_one = json.loads(Path(one_config.path).with_name("model.json").read_text())
    assert one["distributed"]["world_size"] == 1 and n_train == card_one["training"]["split"]["train_items"] > 0
    split = two["distributed"]
    assert (
        split["world_size"] == 2
        and split["backend"] == "gloo"
        and split["launcher"] == "spawn"
        and split["device"] == "cpu"
    )
    # same data once per epoch in total: disjoint partitions (no repeat) that add up to one process's items
    assert sum(split["train_items_per_rank"]) == n_train and split["train_items_repeated"] == 0
    assert split["train_items_per_rank"] == [len(p) for p in partition(list(range(n_train)), 2, 8)]
    assert sum(split["val_items_per_rank"]) == one["distributed"]["val_items_per_rank"][0] > 0

    # published once, by rank 0: checkpoint, model.json and train_stats.json carry the split
    assert Path(two_config.path).is_file()
    card_two = json.loads(Path(two_config.path).with_name("model.json").read_text())
    assert card_two["training"]["distributed"] == split
    assert json.loads((Path(two_config.path).parent / "train_stats.json").read_text())["distributed"] == split
    assert (captured.out + captured.err).count("New Model published") == 1

    # the reported metric is the whole validation set's: the published checkpoint scored here in one process
    whole_two, items = _whole_validation(two_config, datastore_dir, two_config.path)
    whole_one, _ = _whole_validation(one_config, datastore_dir, one_config.path)
    assert len(items) == card_two["training"]["split"]["val_items"] == sum(split["val_items_per_rank"])
    assert two["eval"]["best_metric"] == pytest.approx(whole_two, abs=1e-6)
    assert one["eval"]["best_metric"] == pytest.approx(whole_one, abs=1e-6)
    # and within noise of one process: the two runs differ only in item order and per-process batch-norm batches
    # (same seeded start, items and steps); one-process runs differing only in the seed spread 0.10-0.47 here
    tolerance = _tolerance(items, len(one_config.classes))
    assert abs(one["eval"]["best_metric"] - two["eval"]["best_metric"]) <= tolerance, (
        one["eval"],
        two["eval"],
        tolerance,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_processes_join_its_group_and_rank_0_publishes(datastore_dir, tmp_path):
    model_dir, out = tmp_path / "model", tmp_path / "out"
    out.mkdir()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(SCRIPT),
        TASK,
        str(datastore_dir),
        str(model_dir),
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(env, OMP_NUM_THREADS="1"))
    log = result.stdout + result.stderr
    (tmp_path / "torchrun.log").write_text(log)
    assert result.returncode == 0, log[-4000:]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    split = ranks[0]["distributed"]
    assert split["world_size"] == 2 and split["backend"] == "gloo" and split["launcher"] == "torchrun"
    card = json.loads((model_dir / TASK / "model.json").read_text())
    assert (
        sum(split["train_items_per_rank"]) == card["training"]["split"]["train_items"]
        and split["train_items_repeated"] == 0
    )
    assert (model_dir / TASK / "model.pt").is_file() and card["training"]["distributed"] == split
    assert log.count("New Model published") == 1  # by rank 0 only
    assert "energy" in ranks[0] and "energy" not in ranks[1]  # rank 0's own post-processing ran on rank 0 only
    assert ranks[0]["eval"]["best_metric"] == ranks[1]["eval"]["best_metric"]  # reduced over both ranks


def test_two_cpu_processes_fine_tune_and_only_rank_0_promotes(datastore_dir, tmp_path):
    from main import discover_configs

    config = discover_configs()[TASK]()
    config.init(TASK, str(tmp_path / "model"), CONF, None)
    Path(config.path).parent.mkdir(parents=True)
    torch.save({"model": config.network.state_dict()}, config.path)  # the served checkpoint: initial weights
    served = tmp_path / "served.pt"
    served.write_bytes(Path(config.path).read_bytes())
    request = dict(REQUEST, name="ft", train_batch_size=8, multi_gpu=True, processes=2, finetune=True, al_run="r1")
    _, stats = _train(datastore_dir, tmp_path / "model", request)

    record = json.loads((Path(config.path).parent / "finetune_result.json").read_text())
    assert stats["finetune"] == record and record["run"] == "r1" and stats["distributed"]["world_size"] == 2
    # the served checkpoint was scored before the run by both ranks together: on the whole validation set
    assert record["metric_before"] == pytest.approx(_whole_validation(config, datastore_dir, served)[0], abs=1e-6)
    assert record["metric_after"] == stats["eval"]["best_metric"]
    assert not Path(config.path).with_name("model.candidate.pt").exists()
    assert (Path(config.path).read_bytes() == served.read_bytes()) is (not record["promoted"])
