"""Train one task in each process of a torchrun launch, as ``mri-label train`` does (used by test_distributed.py).

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/torchrun_train.py TASK DATASTORE MODEL_DIR OUT

Every process calls the task's trainer with the same request; the trainer joins torchrun's process group.
Each rank writes what its call returned to ``OUT/rank<RANK>.json``.
"""

import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "apps" / "mri_app"))

# the request of the test's runs: 1 epoch, 8 items per batch on each of the 2 processes
REQUEST = {
    "max_epochs": 1,
    "name": "torchrun",
    "dataset": "Dataset",
    "seed": 0,
    "train_batch_size": 8,
    "early_stop_patience": 0,
}


def main(task: str, datastore_dir: str, model_dir: str, out: str) -> None:
    from monailabel.config import settings

    from lib.datastore import MRIDatastore
    from main import discover_configs

    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ.get('RANK')}] %(name)s %(message)s")
    config = discover_configs()[task]()
    config.init(task, model_dir, {f"{task}_image_size": "32", f"{task}_widths": "4,8,8,8"}, None)
    datastore = MRIDatastore(datastore_dir, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT, auto_reload=False)
    stats = config.trainer()(dict(REQUEST), datastore)
    Path(out, f"rank{os.environ['RANK']}.json").write_text(json.dumps(stats, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:5])
