"""The HTTP API answers what `retrain classify` answers, batches concurrent requests,
describes the model, checks the API key and documents itself."""
import re
import threading

import numpy as np
import pytest

from retrain.classify import classify
from retrain.model_file import load_model_file
from retrain.runtimes import RUNTIMES
from numerics import float32_paths_atol

from serving import LITE0, PHOTOS, needs_lite0, needs_serve, photo, running

pytestmark = needs_serve
NAMES = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")


def assert_same_answers(model, answers, expected):
    """Same labels in the same order; probabilities equal within float32 accumulation
    (a batch of other images may sum in another order)."""
    for got, want in zip(answers, expected, strict=True):
        assert [t["label"] for t in got["top"]] == [t["label"] for t in want["top"]]
        got_p = np.array([t["probability"] for t in got["top"]])
        want_p = np.array([t["probability"] for t in want["top"]])
        np.testing.assert_allclose(got_p, want_p, rtol=0, atol=float32_paths_atol(model, want_p))


@needs_lite0
@pytest.mark.parametrize("runtime", ["numpy", "auto"])
def test_photos_get_the_labels_and_probabilities_of_retrain_classify(runtime):
    model = load_model_file(LITE0)
    with running(LITE0, "-q", "--runtime", runtime) as server:
        expected = list(classify(model, [PHOTOS / n for n in NAMES], top_k=5,
                                 **server.runtime()))
        status, _, answer = server.classify([photo(n) for n in NAMES], top_k=5)
        assert status == 200, answer
        assert [r["file"] for r in answer["results"]] == list(NAMES)
        assert_same_answers(model, answer["results"], expected)
        raw = (PHOTOS / "rocket.jpg").read_bytes()
        status, _, answer = server.request("POST", "/v1/classify?top_k=5", raw,
                                           {"Content-Type": "image/jpeg"})
        assert status == 200, answer
        assert_same_answers(model, answer["results"], expected[2:3])
        assert server.stop()[0] == 0


def test_concurrent_clients_are_batched_and_get_the_answers_of_classify(colour_model, tmp_path):
    """8 clients x 6 requests of one image each; the server forms batches of several."""
    model = load_model_file(colour_model)
    images = sorted((colour_model.parent / ".." / "data").resolve().rglob("*.png"))[::4]
    failures, answers = [], []

    def client(index):
        for request in range(6):
            path = images[(index + request) % len(images)]
            status, _, answer = server.classify([(path.name, path.read_bytes())])
            (answers if status == 200 else failures).append(answer)

    with running(colour_model, "--max-wait-ms", "50") as server:
        expected = {p.name: r for p, r in zip(images, classify(model, images, top_k=3,
                                                               **server.runtime()))}
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _, _, health = server.request("GET", "/healthz")
        code, out, _ = server.stop()
    assert failures == [] and len(answers) == 48
    for answer in answers:
        (result,) = answer["results"]
        assert_same_answers(model, [result], [expected[result["file"]]])
    assert health["images"] == 48
    assert health["batches"] < 48 / 2, health        # batched, not one forward pass each
    assert code == 0
    log = server.lines[1:-1]       # GET /v1/model, 48 classify requests, GET /healthz
    assert len(log) == 1 + 48 + 1 and all('"POST /v1/classify?top_k=3" 200' in l
                                          for l in log[1:49])


def test_the_model_card_the_health_check_and_the_openapi_page(colour_model):
    with running(colour_model, "-q") as server:
        status, _, card = server.request("GET", "/v1/model")
        assert status == 200
        assert card["labels"] == ["blue", "green", "red"] and card["input_size"] == [8, 8]
        assert card["backbone"] == "stand_in" and card["runtime"] in RUNTIMES
        assert server.lines[0].endswith(f"with {card['runtime']} in {card['precision']} "
                                        "(the page: /, the API: /docs)")
        test = card["metrics"]["test"]
        assert np.array(test["confusion_matrix"]).sum() == test["count"] > 0
        assert card["provenance"]["backbone"] == "stand_in"
        assert server.request("GET", "/healthz")[2]["status"] == "ready"
        status, _, spec = server.request("GET", "/openapi.json")
        body = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "image/*"} <= set(body)
        assert {"/v1/model", "/healthz"} <= set(spec["paths"])
        status, _, docs = server.request("GET", "/docs")
        assert status == 200 and "openapi.json" in docs
        # /docs works offline: every script and style it loads comes from this server
        sources = re.findall(r"""(?:src|href)=['"]([^'"]+)""", docs)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            status, _, asset = server.request("GET", source)
            assert status == 200 and len(asset) > 500, source
        code, out, _ = server.stop()
    assert code == 0 and out.splitlines() == [     # -q: no access-log lines
        "stopped (SIGTERM); the requests in flight were answered"]


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_api_key_guards_v1_and_nothing_else(colour_model, how):
    options, env = (("--api-key", "s3cret"), None) if how == "option" else \
        ((), {"RETRAIN_API_KEY": "s3cret"})
    with running(colour_model, "-q", *options, env=env) as server:
        assert server.request("GET", "/v1/model")[0] == 401
        status, headers, answer = server.request("GET", "/v1/model",
                                                 headers={"Authorization": "Bearer wrong"})
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert "API key" in answer["error"]
        image = (PHOTOS / "chelsea.png").read_bytes()
        assert server.classify([("c.png", image)])[0] == 401
        good = {"Authorization": "Bearer s3cret"}
        assert server.request("GET", "/v1/model", headers=good)[0] == 200
        assert server.classify([("c.png", image)], headers=good)[0] == 200
        assert server.request("GET", "/healthz")[0] == 200
        assert server.request("GET", "/")[0] == 200


def test_without_a_key_v1_is_open(colour_model):
    with running(colour_model, "-q", env={"RETRAIN_API_KEY": ""}) as server:
        assert server.request("GET", "/v1/model")[0] == 200
