"""``mri-label``: a thin command line; heavy imports happen inside the subcommands.

mri-label sample-data DIR            write the synthetic sample datastore
mri-label serve [--studies DIR]      start the MONAI Label server with the MRI app
mri-label import FORMAT SRC DEST     convert a published data set into a datastore
mri-label train TASK --studies DIR   train with the shipped models' recipe, evaluate, write model.json
mri-label evaluate TASK --studies DIR
mri-label report IMAGE --task TASK   one A4 page (PDF, PNG, JSON) on one image, research use only
"""

import argparse
import json
import os
import sys
from pathlib import Path

from mri_label.app_path import app_dir, app_on_path
from mri_label.launch import start_server_command

DEFAULT_DATASTORE = Path.home() / ".mri-label" / "sample-datastore"


def server_state():
    """The app's :mod:`lib.server_state` (per-server model folder and log file), imported from its folder."""
    app_on_path()
    from lib import server_state as state  # noqa: E402  (importable once the app folder is on sys.path)

    return state


def sample_data(args) -> int:
    from mri_label.sample_data import write_sample_data

    summary = write_sample_data(args.dest, seed=args.seed, progress=lambda m: print(m, flush=True))
    print(f"wrote {summary['images']} synthetic images and {summary['labels']} labels to {summary['path']}")
    return 0


def serve(args) -> int:
    studies = args.studies
    if studies is None:
        studies = str(DEFAULT_DATASTORE)
        if not (DEFAULT_DATASTORE / "datastore_v2.json").exists():
            from mri_label.sample_data import write_sample_data

            print(f"no --studies given: writing the sample datastore to {studies}", flush=True)
            write_sample_data(studies, with_template=True)
    from monailabel.utils.others.generic import init_log_config

    conf = dict(args.conf or [])
    state = server_state()
    # MONAI Label's log configuration, writing this server's own log file from its first line (lib.server_state)
    log_config = init_log_config(None, state.state_dir(studies, conf), state.LOG_NAME)
    command = start_server_command(
        app_dir(), studies, args.host, args.port, {"models": args.models, **conf}, log_config=log_config
    )
    print("+ " + " ".join(command), flush=True)
    os.execv(sys.executable, command)
    return 0


def evaluate(args) -> int:
    from mri_label.evaluate import evaluate as run

    summary = run(
        args.task,
        args.studies,
        model=args.model,
        out=args.out,
        target_recall=args.target_recall,
        model_dir=args.model_dir,
        progress=lambda m: print(m, flush=True),
        split_kind=args.split,
        side=args.side,
        conf=dict(args.conf or []),
    )
    held_out = f"{'held-out' if args.side == 'test' else 'validation'} subjects"
    if args.split != "grouped":
        held_out = "subjects, RANDOM image split (optimistic)"
    print(
        f"{summary['task']}: {summary['n_images']} images of {summary['n_subjects']} {held_out}: {summary['headline']}"
    )
    print("wrote " + ", ".join(summary["files"]))
    return 0


def train(args) -> int:
    from mri_label.train import train as run

    model_dir = args.model_dir or server_state().model_dir(args.studies)
    summary = run(
        args.task,
        args.studies,
        model_dir,
        epochs=args.epochs,
        held_out=not args.no_evaluate,
        progress=lambda m: print(m, flush=True),
        learning_rate=args.learning_rate,
        patience=args.patience,
        conf=dict(args.conf or []),
    )
    print(summary)
    return 0


def pretrain(args) -> int:
    from mri_label.pretrain import pretrain as run

    sources = {}
    for pair in args.source:
        task, sep, studies = pair.partition("=")
        if not sep or not task or not studies:
            print(f"mri-label pretrain: --source must be TASK=DATASTORE, got {pair!r}", file=sys.stderr)
            return 2
        sources[task] = studies
    card = run(
        sources,
        args.out,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        progress=lambda m: print(m, flush=True),
    )
    print(json.dumps({k: card[k] for k in ("checkpoint", "tasks", "training")}, indent=1))
    return 0


def import_data(args) -> int:
    from mri_label.importers import import_dataset  # its DatasetError is a ValueError: refused by main

    summary = import_dataset(args.format, args.src, args.dest, progress=lambda m: print(m, flush=True), task=args.task)
    print(summary)
    return 0


def report(args) -> int:
    from mri_label.patient_report import check_arguments, make_report

    try:  # the arguments first, before the app and the model load
        check_arguments(args.task, args.age, args.sex)
        if not os.path.exists(args.image):
            raise ValueError(f"IMAGE: no such file or folder {args.image!r}")
        if args.model_dir is not None and not os.path.isdir(args.model_dir):
            raise ValueError(f"--model-dir: no such folder {args.model_dir!r}")
    except ValueError as error:
        print(f"mri-label report: {error}", file=sys.stderr)
        return 2
    summary = make_report(
        args.image,
        args.task,
        model_dir=args.model_dir,
        age=args.age,
        sex=args.sex,
        out=args.out,
        progress=lambda m: print(m, flush=True),
    )
    print("wrote " + ", ".join(summary["files"].values()))
    return 0


def add_conf_option(command: argparse.ArgumentParser, help: str) -> None:
    """``--conf KEY VALUE`` (repeatable): an app option, as the server's ``--conf``."""
    command.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), help=help)


def parser() -> argparse.ArgumentParser:
    from mri_label import tasks  # cheap: the app's configs load when a task's declaration is first asked

    top = argparse.ArgumentParser(prog="mri-label", description="Brain-MRI models served by MONAI Label")
    commands = top.add_subparsers(dest="command", required=True)

    p = commands.add_parser("sample-data", help="write the synthetic sample datastore into DEST")
    p.add_argument("dest", help="folder to create (must not hold a datastore yet)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=sample_data)

    p = commands.add_parser("import", help="convert a published dataset layout into a datastore")
    p.add_argument("format", choices=["lgg", "classfolders", "decathlon", "brats"])
    p.add_argument("src", help="the dataset as published")
    p.add_argument("dest", help="datastore folder to create")
    p.add_argument("--task", help="classfolders only: sequence, dementia_stage, tumor_type or tumor_gate")
    p.set_defaults(run=import_data)

    p = commands.add_parser("evaluate", help="evaluate a task's model on the held-out subjects")
    p.add_argument("task")
    p.add_argument("--studies", required=True, help="datastore folder")
    p.add_argument("--model", help="checkpoint to evaluate (default: the app's current one)")
    p.add_argument(
        "--model-dir",
        help="the model folder (default: the one a server on --studies serves, ~/.mri-label/servers/NAME-HASH/model)",
    )
    p.add_argument("--out", help="report folder (default evaluation/TASK)")
    p.add_argument("--target-recall", type=float, default=0.97, help="tumor_gate: recall the threshold must reach")
    p.add_argument(
        "--split",
        choices=["grouped", "random"],
        default="grouped",
        help="grouped: test subjects of split.json (default); random: test images of split_random.json, "
        "an image-level split for comparison (optimistic on class-folder sets)",
    )
    p.add_argument(
        "--side",
        choices=["test", "val"],
        default="test",
        help="test: the held-out subjects (default); val: the validation subjects, to make a choice on",
    )
    add_conf_option(p, "app option for this evaluation, repeatable (e.g. tumor_seg_keep_largest_component false)")
    p.set_defaults(run=evaluate)

    p = commands.add_parser(
        "report",
        help="run a task on one image file and write a one-page report (report.pdf, report.png, report.json); "
        "research use only",
    )
    p.add_argument("image", help="a NIfTI or NRRD file, or a DICOM series folder")
    # the tasks whose config declares measures (mri_label.tasks.reported_tasks), asked when --task is read or the help
    # shown (a metavar: argparse would list the choices, importing the app's configs, when the parser is built)
    p.add_argument(
        "--task",
        required=True,
        metavar="TASK",
        choices=tasks.LazyNames(tasks.reported_tasks),
        help="a task whose config declares measures: %(choices)s",
    )
    p.add_argument(
        "--model-dir",
        help="a model folder (<dir>/<task>/model.pt with model.json); default: the shipped checkpoint",
    )
    p.add_argument("--age", type=float, help="age in years (0-120), recorded; no percentile is computed yet")
    p.add_argument("--sex", type=str.upper, choices=["F", "M"], help="F or M, recorded")
    p.add_argument("--out", help="output folder (default: <image name>-<task>-report)")
    p.set_defaults(run=report)

    p = commands.add_parser(
        "train", help="train a task with its recipe, evaluate it on held-out subjects, write model.json"
    )
    p.add_argument("task")
    p.add_argument("--studies", required=True, help="datastore folder (see mri-label import)")
    p.add_argument(
        "--model-dir",
        help="the model folder to train into (default: the one a server on --studies serves, "
        "~/.mri-label/servers/NAME-HASH/model)",
    )
    p.add_argument(
        "--epochs", type=int, help="override the epoch budget of the recipe the task declares (lib/configs/TASK.py)"
    )
    p.add_argument("--learning-rate", type=float, help="override the recipe's learning rate")
    p.add_argument("--patience", type=int, help="override the recipe's early-stopping patience (epochs; 0 = off)")
    p.add_argument("--no-evaluate", action="store_true", help="skip the held-out evaluation")
    add_conf_option(p, "extra app option for this training, repeatable (e.g. dementia_stage_pretrained FILE)")
    p.set_defaults(run=train)

    p = commands.add_parser(
        "pretrain",
        help="pre-train a slice encoder on several classification tasks' training "
        "subjects, for --conf <task>_pretrained",
    )
    p.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="TASK=DATASTORE",
        help="a classification task and its datastore folder, repeatable",
    )
    p.add_argument("--out", required=True, help="output folder (encoder.pt, model.json)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.set_defaults(run=pretrain)

    p = commands.add_parser("serve", help="start the MONAI Label server with the MRI app")
    p.add_argument("--studies", help=f"datastore folder or DICOMweb URL (default: sample data in {DEFAULT_DATASTORE})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--models", default="all", help="'all' or comma-separated task names")
    add_conf_option(p, "extra app option, repeatable")
    p.set_defaults(run=serve)
    return top


REFUSED = (FileNotFoundError, FileExistsError, ValueError)
"""What a subcommand raises for input it refuses (a wrong folder or file, an existing destination, an option out of
range; an importer's ``DatasetError`` is a ``ValueError``): :func:`main` prints it in one line and exits 1."""


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except REFUSED as error:  # one place: a refusal in one line naming the problem, not a traceback
        print(f"mri-label {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
