"""Pipelines (:mod:`lib.pipeline_config`) are declared once, in ``lib/configs/pipelines/<name>.py``, and built from the
declaration alone: a made-up pipeline over made-up stage tasks, added to a copy of the app as one file (and its two
stage tasks as one file each), is listed by the task registry, loaded by ``mri-label evaluate``, served, and answers
under its own stage names; ``tumor_pipeline`` is not served there because its stages are not. A stage name written
into the server, the pipeline infer, the registry or the evaluation fails these tests."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.app import APP_DIR, ROOT, write_checkpoints

PIPELINE, GATE, SEGMENTER, TYPING = "lesion_pipeline", "lesion_gate", "lesion_seg", "dementia_stage"
FILES = {
    # stage tasks of other names: the gate and the segmenter of the tumor tasks, renamed
    f"lib/configs/{GATE}.py": f'''
        from lib.configs.tumor_gate import TumorGateConfig


        class LesionGateConfig(TumorGateConfig):
            mask_task = ("{SEGMENTER}", dict(TumorGateConfig.mask_task[1]))
            reads_networks_of = ("{SEGMENTER}",)
        ''',
    f"lib/configs/{SEGMENTER}.py": """
        from lib.configs.tumor_seg import TumorSegConfig


        class LesionSegConfig(TumorSegConfig):
            pass
        """,
    f"lib/configs/pipelines/{PIPELINE}.py": f'''
        from lib.pipeline_config import PipelineConfig


        class LesionPipelineConfig(PipelineConfig):
            gate = "{GATE}"
            segmentation = "{SEGMENTER}"
            typing = "{TYPING}"
            reference = "{SEGMENTER}"
            description = "Lesion pipeline: {{gate}} per slice; {{later}} only where the gate fires"
        ''',
}
SMALL = {f"{GATE}_image_size": "32", f"{SEGMENTER}_image_size": "64", f"{TYPING}_image_size": "32"}


@pytest.fixture(scope="module")
def other_app(tmp_path_factory) -> Path:
    """A copy of the app's code with the made-up pipeline and its two stage tasks added."""
    folder = tmp_path_factory.mktemp("other_app") / "app"
    shutil.copytree(APP_DIR / "lib", folder / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(APP_DIR / "main.py", folder / "main.py")
    for name, text in FILES.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return folder


@pytest.fixture
def serve(other_app, datastore_dir, tmp_path):
    """``serve(models)``: (client, app) of an in-process server of the copy on the sample data, serving ``models``."""
    from monailabel.config import settings
    from monailabel.interfaces.utils.app import app_instance, clear_cache

    started = []

    def start(models):
        settings.MONAI_LABEL_APP_DIR = str(other_app)
        settings.MONAI_LABEL_STUDIES = str(datastore_dir)
        settings.MONAI_LABEL_APP_CONF = {
            "models": ",".join(models),
            "model_dir": str(tmp_path / "model"),
            "state_dir": str(tmp_path / "state"),
            **SMALL,
        }
        settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
        clear_cache()
        from monailabel.app import app

        client = TestClient(app)
        client.__enter__()
        started.append(client)
        return client, app_instance()

    yield start
    for client in started:
        client.__exit__(None, None, None)
    clear_cache()
    settings.MONAI_LABEL_APP_DIR = str(APP_DIR)
    # MONAI Label imported the copy's ``lib`` in place of the app's: drop it, so that later imports find the app's
    for name in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
        del sys.modules[name]


def _infer(client, image, threshold):
    return client.post(
        f"/infer/{PIPELINE}?image={image}&output=json", data={"params": json.dumps({"threshold": threshold})}
    )


def test_a_declared_pipeline_is_served_under_its_own_stage_names(serve):
    client, app = serve([GATE, SEGMENTER, TYPING])
    info = client.get("/info/").json()["models"]
    assert PIPELINE in info and "tumor_pipeline" not in info  # served where its required stages are, and only there
    assert info[PIPELINE]["type"] == "segmentation" and info[PIPELINE]["labels"] == info[SEGMENTER]["labels"]
    assert info[PIPELINE]["description"] == (
        f"Lesion pipeline: {GATE} per slice; {SEGMENTER} and {TYPING} only where the gate fires"
    )
    untrained = _infer(client, "synth01_flair", 0.0)
    assert untrained.status_code == 409 and f"{TYPING}/model.pt" in untrained.json()["detail"]

    write_checkpoints(app)
    fired = _infer(client, "synth01_flair", 0.0)
    assert fired.status_code == 200, fired.text
    fired = fired.json()
    assert fired["task"] == PIPELINE and fired["tumor"] is True and fired["fired_slices"]
    assert set(fired["checkpoints"]) == {GATE, SEGMENTER, TYPING}
    assert fired["checkpoints"][TYPING]["name"].endswith(f"{TYPING}/model.pt")
    kind = fired[TYPING]  # the typing stage answers under its task's name
    assert [s["index"] for s in kind["slices"]] == fired["fired_slices"]
    assert kind["label"] in info[TYPING]["labels"] and "tumor_type" not in fired
    assert fired["gate"]["slices"] and set(fired["latencies"]) >= {"gate", "segmentation", "type", "total"}

    quiet = _infer(client, "synth01_flair", 1.0).json()
    assert quiet["fired_slices"] == [] and quiet[TYPING] is None and quiet["measurements"]["total_mm3"] == 0


def test_a_pipelines_work_budget_counts_its_served_stages(serve):
    from lib.datastore import read_header, read_spacing, spatial_size
    from lib.request_checks import infer_cost

    client, app = serve([GATE, SEGMENTER, TYPING])
    write_checkpoints(app)
    path = app.datastore().get_image_uri("synth01_flair")
    size, spacing = spatial_size(read_header(path, "image")[0]), read_spacing(path)
    cost = sum(infer_cost(size, spacing, app.models[t]) for t in (GATE, SEGMENTER, TYPING))
    app.max_infer_voxels = cost - 1
    refused = _infer(client, "synth01_flair", 1.0)
    assert refused.status_code == 413 and f"{cost:,} voxels" in refused.json()["detail"]
    app.max_infer_voxels = cost
    assert _infer(client, "synth01_flair", 1.0).status_code == 200


def test_a_pipeline_runs_without_its_optional_stage(serve):
    client, app = serve([GATE, SEGMENTER])
    info = client.get("/info/").json()["models"]
    assert info[PIPELINE]["description"] == f"Lesion pipeline: {GATE} per slice; {SEGMENTER} only where the gate fires"
    write_checkpoints(app)
    answer = _infer(client, "synth01_flair", 0.0).json()
    assert set(answer["checkpoints"]) == {GATE, SEGMENTER} and TYPING not in answer and answer["fired_slices"]


def test_a_pipeline_is_not_served_without_a_required_stage(serve):
    client, _ = serve([GATE, TYPING])
    assert PIPELINE not in client.get("/info/").json()["models"]


def test_the_registry_and_the_evaluation_read_the_declaration(other_app, tmp_path):
    """In a fresh interpreter whose app is the copy (``MRI_LABEL_APP``): the registry lists the made-up pipeline and
    its stages, and ``mri-label evaluate`` chains its required stages."""
    probe = f"""
import json
from mri_label import tasks
from mri_label.evaluate import load_app

try:
    load_app({str(tmp_path)!r}, {PIPELINE!r}, model={str(tmp_path / "x.pt")!r})
except ValueError as error:
    refused = str(error)
print(json.dumps({{
    "pipelines": tasks.pipeline_names(),
    "tasks": tasks.task_names(),
    "stages": tasks.pipeline_stages({PIPELINE!r}),
    "required": tasks.pipeline_required_stages({PIPELINE!r}),
    "gate": tasks.pipeline_gate({PIPELINE!r}),
    "reference": tasks.pipeline_reference({PIPELINE!r}),
    "running": tasks.pipelines_running({TYPING!r}),
    "is_pipeline": [tasks.is_pipeline({PIPELINE!r}), tasks.is_pipeline({GATE!r})],
    "refused": refused,
}}))
"""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(MRI_LABEL_APP=str(other_app), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["pipelines"] == [PIPELINE, "tumor_pipeline"]
    assert {GATE, SEGMENTER} <= set(found["tasks"]) and PIPELINE not in found["tasks"]
    assert found["stages"] == [GATE, SEGMENTER, TYPING] and found["required"] == [GATE, SEGMENTER]
    assert found["gate"] == GATE and found["reference"] == SEGMENTER
    assert found["running"] == [PIPELINE] and found["is_pipeline"] == [True, False]
    assert found["refused"].startswith(f"model: {PIPELINE} chains {GATE}, {SEGMENTER}; give their checkpoints")


def test_a_declaration_naming_no_task_is_refused():
    from lib.pipeline_config import PipelineConfig

    class Broken(PipelineConfig):
        gate, segmentation, typing, reference = "tumor_gate", "no_such_task", "tumor_type", ""

    tasks = ["tumor_gate", "tumor_seg", "tumor_type"]
    with pytest.raises(ValueError, match="pipeline broken: declares no reference; its segmentation 'no_such_task'"):
        Broken.check("broken", tasks)
    with pytest.raises(ValueError, match="has the name of a task"):
        PipelineConfig.check("tumor_seg", tasks)


def test_discovery_finds_the_pipelines_after_monai_label_reloaded_lib():
    """MONAI Label drops and re-imports the app's ``lib`` when it loads an app; a module that imported
    ``lib.configs.pipelines`` before (the app's ``main``, imported by a test) must still find the declarations."""
    import lib.configs.pipelines as before

    for name in [m for m in sys.modules if m == "lib" or m.startswith("lib.")]:
        del sys.modules[name]
    import lib.pipeline_config  # noqa: F401  (a new generation of lib, as after MONAI Label's reload)

    assert "tumor_pipeline" in before.discover()
