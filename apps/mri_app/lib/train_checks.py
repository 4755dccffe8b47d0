"""The checks of a train request, before anything is queued: ``POST /train/<task>`` (:mod:`lib.routes`) and
``POST /train/`` (every task, :mod:`lib.guard_routes`) both run :func:`check_train_request`."""

from monailabel.interfaces.utils.app import app_instance

from lib import stock
from lib.conf import conf_bool
from lib.errors import bad_input, refused
from lib.request_checks import RequestError, check_train_params


def check_train_request(model: str, params: dict) -> None:
    """The checks of a train request for task ``model``: 404 unknown task, 422 bad params, 409 nothing to resume."""
    trainers = app_instance().info().get("trainers", {})
    if model not in trainers:
        raise bad_input(404, f"no train task {model!r}; train tasks: {sorted(trainers)}")
    try:
        check_train_params(params, stock.trainer_defaults(app_instance(), model))
    except RequestError as error:
        raise refused(error) from None
    check_resume(stock.trainers(app_instance())[model], params)


def check_resume(trainer, params: dict) -> None:
    """409 for ``{"resume": true}`` when the run named in ``params`` has nothing to resume; 422 with ``finetune``."""
    from lib.trainers.checkpoints import resume_path, resume_problem

    try:
        resume = conf_bool(params, "resume", False, where="params")
        finetune = conf_bool(params, "finetune", False, where="params")
    except ValueError as error:
        raise bad_input(422, str(error)) from None
    if not resume:
        return
    if finetune:
        raise bad_input(422, "resume and finetune exclude each other: resume continues a run, finetune starts one")
    config = dict(trainer.config(), **params)
    try:
        max_epochs = int(config["max_epochs"])
    except (TypeError, ValueError):
        raise bad_input(422, f"max_epochs must be an integer, got {config['max_epochs']!r}") from None
    problem = resume_problem(resume_path(trainer.model_dir, str(config["name"])), max_epochs)
    if problem:
        raise bad_input(409, problem)
