"""lib.routes / lib.guard_routes in process: slow work (an active-learning strategy, the dataset ZIP) runs on a
worker thread, so the API answers meanwhile (stock MONAI Label runs both on the event loop)."""

import threading
import time

import pytest

SLOW_S = 3.0


class SlowStrategy:
    """A strategy that takes :data:`SLOW_S` seconds and picks the first image."""

    def __call__(self, request, datastore):
        time.sleep(SLOW_S)
        return {"id": datastore.list_images()[0]}

    def info(self):
        return {"description": "slow"}


def _slow_archive(original):
    def archive(limit_cases):
        time.sleep(SLOW_S)
        return original(limit_cases)

    return archive


@pytest.mark.parametrize("slow", ["strategy", "dataset"])
def test_the_api_answers_while_slow_work_runs(api_server, monkeypatch, slow):
    client, app, _ = api_server
    if slow == "strategy":
        monkeypatch.setitem(app._strategies, "slow", SlowStrategy())
        work = lambda: client.post("/activelearning/slow", json={})  # noqa: E731
    else:
        datastore = app.datastore()
        monkeypatch.setattr(datastore, "get_dataset_archive", _slow_archive(datastore.get_dataset_archive))
        work = lambda: client.get("/datastore/dataset")  # noqa: E731
    answers = []
    worker = threading.Thread(target=lambda: answers.append(work()))
    worker.start()
    time.sleep(0.5)
    asked = time.time()
    info = client.get("/info/")
    waited = time.time() - asked
    worker.join(timeout=60)
    assert info.status_code == 200 and waited < SLOW_S / 2, f"/info waited {waited:.1f} s"
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
