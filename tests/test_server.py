"""The prediction server (calmops_dagster.interfaces.server) through FastAPI's TestClient, on a processed pipeline."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from processed_home import copy_home

from calmops_dagster.errors import CalmOpsError
from calmops_dagster.generators.drifting_blocks import make_drifting_blocks
from calmops_dagster.interfaces.server import check_bind, create_app
from calmops_dagster.steps.predict_block import predict_frame
from calmops_dagster.store.metrics_store import MetricsStore
from calmops_dagster.store.model_store import ModelStore

FEATURES = ["x1", "x2", "x3", "x4", "segment"]


@pytest.fixture(scope="module")
def rows():
    return make_drifting_blocks(n_blocks=1, rows_per_block=20, drift_at=5, seed=3)[FEATURES]


@pytest.fixture
def client(processed_home):
    home, _ = processed_home
    with TestClient(create_app(home)) as c:
        yield c


def test_records_and_columns_forms_give_the_champions_predictions(client, processed_home, rows):
    home, _ = processed_home
    store = ModelStore(home.models_dir("demo"))
    version = store.champion_version()
    expected = predict_frame(store.load(version), FEATURES, rows, "classification")

    by_records = client.post("/predict/demo", json=rows.to_dict(orient="records"))
    assert by_records.status_code == 200, by_records.text
    body = by_records.json()
    assert body["model_version"] == version == "v0002"
    assert body["predictions"] == expected["prediction"].tolist()
    assert body["classes"] == [0, 1]
    np.testing.assert_allclose(np.array(body["probabilities"]), expected[["proba_0", "proba_1"]].to_numpy(),
                               atol=1e-6)

    by_columns = client.post("/predict/demo", json={"columns": FEATURES, "data": rows.to_numpy().tolist()})
    assert by_columns.status_code == 200, by_columns.text
    assert by_columns.json()["predictions"] == body["predictions"]


def test_columns_in_another_order_are_reordered(client, rows):
    shuffled = rows[["segment", "x4", "x1", "x3", "x2"]]
    a = client.post("/predict/demo", json=rows.to_dict(orient="records")).json()
    b = client.post("/predict/demo", json=shuffled.to_dict(orient="records")).json()
    assert a["predictions"] == b["predictions"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/predict/nope", [{"x1": 1}], 404, "unknown pipeline 'nope'"),
        ("/predict/..%2F..%2Fetc", [{"x1": 1}], 404, ""),
        ("/predict/demo", {"columns": ["x1"], "data": [[1.0]]}, 422, "missing column(s) ['x2', 'x3', 'x4', 'segment']"),
        ("/predict/demo", [{"x1": 1.0, "x2": 1.0, "x3": 0.0, "x4": 0.0, "segment": "a", "y": 1}], 422,
         "unexpected column(s) ['y']"),
        ("/predict/demo", [{"x1": "high", "x2": 1.0, "x3": 0.0, "x4": 0.0, "segment": "a"}], 422,
         "column 'x1' expects numbers; row 0 holds 'high'"),
        ("/predict/demo", [{"x1": 1.0, "x2": 1.0, "x3": 0.0, "x4": 0.0, "segment": 7}], 422,
         "column 'segment' expects a category"),
        ("/predict/demo", [{"x1": [1], "x2": 1.0, "x3": 0.0, "x4": 0.0, "segment": "a"}], 422,
         "column 'x1' expects numbers"),
        ("/predict/demo", [], 422, "no rows"),
        ("/predict/demo", {"rows": []}, 422, "expected a JSON list of records"),
        ("/predict/demo", {"columns": ["x1", "x1"], "data": [[1, 2]]}, 422, "holds a name twice"),
        ("/predict/demo", {"columns": FEATURES, "data": [[1, 2]]}, 422, "row 0 of 'data' must be a list of 5"),
        ("/predict/demo", [{"x1": 1.0}, {"x2": 1.0}], 422, "record 1 has other columns"),
    ],
)
def test_bad_requests_say_what_is_wrong(client, path, body, status, words):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_empty_invalid_and_too_large_bodies(processed_home, rows):
    home, _ = processed_home
    with TestClient(create_app(home, max_body_bytes=2_000)) as c:
        empty = c.post("/predict/demo", content=b"", headers={"content-type": "application/json"})
        assert empty.status_code == 400 and "empty body" in empty.json()["detail"]
        garbage = c.post("/predict/demo", content=b"{not json", headers={"content-type": "application/json"})
        assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["detail"]
        big = make_drifting_blocks(n_blocks=1, rows_per_block=200, drift_at=5, seed=1)[FEATURES]
        too_large = c.post("/predict/demo", json=big.to_dict(orient="records"))
        assert too_large.status_code == 413 and "limit of 2000 bytes" in too_large.json()["detail"]
        small = c.post("/predict/demo", json=rows.head(3).to_dict(orient="records"))
        assert small.status_code == 200


def test_row_limit(processed_home, rows):
    home, _ = processed_home
    with TestClient(create_app(home, max_rows=5)) as c:
        response = c.post("/predict/demo", json=rows.to_dict(orient="records"))
    assert response.status_code == 422 and "limit of 5" in response.json()["detail"]


def test_pipelines_health_and_openapi(client, processed_home):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/pipelines").json() == [{"name": "demo", "champion_version": "v0002"}]
    detail = client.get("/pipelines/demo").json()
    assert detail["champion_version"] == "v0002" and detail["versions"] == ["v0001", "v0002"]
    assert detail["last_drift"]["block"] == "4" and detail["last_drift"]["drift_detected"] is False
    assert detail["breaker"]["status"] == "closed" and detail["breaker"]["consecutive_failures"] == 0
    assert client.get("/pipelines/not_there").status_code == 404
    spec = client.get("/openapi.json").json()
    assert {"/predict/demo", "/pipelines", "/pipelines/{name}", "/health"} <= set(spec["paths"])
    assert "requestBody" in spec["paths"]["/predict/demo"]["post"]


def test_breaker_state_is_reported_when_the_table_exists(processed_home, tmp_path):
    home = copy_home(processed_home, tmp_path)
    from datetime import UTC, datetime

    from calmops_dagster.steps.circuit_breaker import on_failure
    from calmops_dagster.store.metrics_store import MetricsStore

    for _ in range(3):  # as the run-failure sensor records three failed trainings
        MetricsStore(home.metrics_db).update_breaker(
            "demo", lambda s: on_failure(s, 3, 120, datetime.now(UTC), "fit failed"))
    with TestClient(create_app(home)) as c:
        breaker = c.get("/pipelines/demo").json()["breaker"]
    assert breaker["pipeline"] == "demo" and breaker["status"] == "open"
    assert breaker["consecutive_failures"] == 3 and breaker["reopen_at"]


def test_serving_one_pipeline_refuses_the_others(processed_home, rows):
    home, _ = processed_home
    with TestClient(create_app(home, pipelines=["other"])) as c:
        response = c.post("/predict/demo", json=rows.to_dict(orient="records"))
        assert response.status_code == 404
        assert c.get("/pipelines").json() == []


def test_api_key_is_required_when_configured(processed_home, rows):
    home, _ = processed_home
    with TestClient(create_app(home, api_key="s3cret")) as c:
        records = rows.to_dict(orient="records")
        assert c.post("/predict/demo", json=records).status_code == 401
        assert c.post("/predict/demo", json=records, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/predict/demo", json=records, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/pipelines").status_code == 401
        assert c.get("/health").status_code == 200


def test_binding_beyond_loopback_needs_a_key():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "key")
    with pytest.raises(CalmOpsError, match="without an API key"):
        check_bind("0.0.0.0", None)


def test_cli_serve_refuses_public_bind_without_key(processed_home, monkeypatch, capsys):
    from calmops_dagster.interfaces.cli import main

    home, _ = processed_home
    monkeypatch.delenv("CALMOPS_API_KEY", raising=False)
    assert main(["--home", str(home.root), "serve", "demo", "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err
    assert main(["--home", str(home.root), "serve", "../x"]) == 2


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_cli_serve_refuses_a_body_timeout_that_is_not_positive(processed_home, capsys, seconds):
    from calmops_dagster.interfaces.cli import main

    home, _ = processed_home
    assert main(["--home", str(home.root), "serve", "--body-timeout-seconds", seconds]) == 2
    assert "--body-timeout-seconds must be more than 0" in capsys.readouterr().err


def test_promotion_is_picked_up_without_a_failed_request(processed_home, tmp_path, rows):
    """Requests run in threads while the champion pointer flips between versions: every request succeeds
    and answers with one of the two versions' exact predictions; after the last flip the new one serves."""
    home = copy_home(processed_home, tmp_path)
    store = ModelStore(home.models_dir("demo"))
    expected = {v: predict_frame(store.load(v), FEATURES, rows, "classification")["prediction"].tolist()
                for v in ("v0001", "v0002")}
    assert expected["v0001"] != expected["v0002"]
    records = rows.to_dict(orient="records")
    failures, seen = [], set()
    stop = threading.Event()

    with TestClient(create_app(home)) as c:
        assert c.post("/predict/demo", json=records).json()["model_version"] == "v0002"

        def hammer():
            while not stop.is_set():
                response = c.post("/predict/demo", json=records)
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                body = response.json()
                seen.add(body["model_version"])
                if body["predictions"] != expected[body["model_version"]]:
                    failures.append(f"{body['model_version']} answered another model's predictions")

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(6):
            store.set_champion("v0001" if i % 2 == 0 else "v0002", block="test", decision="promoted")
            threading.Event().wait(0.15)
        store.set_champion("v0001", block="test", decision="rolled_back")
        threading.Event().wait(0.2)
        stop.set()
        for t in threads:
            t.join()
        final = c.post("/predict/demo", json=records).json()
    assert failures == []
    assert seen == {"v0001", "v0002"}
    assert final["model_version"] == "v0001" and final["predictions"] == expected["v0001"]


def test_a_tampered_new_champion_is_not_served(processed_home, tmp_path, rows):
    home = copy_home(processed_home, tmp_path)
    store = ModelStore(home.models_dir("demo"))
    with TestClient(create_app(home)) as c:
        records = rows.to_dict(orient="records")
        assert c.post("/predict/demo", json=records).json()["model_version"] == "v0002"
        model_file = home.models_dir("demo") / "v0001" / "model.skops"
        model_file.write_bytes(model_file.read_bytes() + b"x")
        store.set_champion("v0001", block="test", decision="promoted")
        response = c.post("/predict/demo", json=records)
        assert response.status_code == 200 and response.json()["model_version"] == "v0002"
        served = c.get("/pipelines/demo").json()["served"]
    assert served["loaded_version"] == "v0002" and "does not match the manifest" in served["reload_error"]


def test_metrics_of_the_processed_home_are_there(processed_home):
    home, _ = processed_home
    decisions = MetricsStore(home.metrics_db).query("SELECT decision FROM promotions ORDER BY block")
    assert pd.Series(decisions["decision"]).tolist() == ["promoted", "kept", "promoted", "kept"]


def test_with_a_signing_key_unsigned_versions_are_never_served(processed_home, tmp_path, rows, monkeypatch):
    """The demo's versions were saved without a key: once one is set they are refused and the server says why."""
    home = copy_home(processed_home, tmp_path)
    store = ModelStore(home.models_dir("demo"), key=None)
    records = rows.to_dict(orient="records")
    with TestClient(create_app(home)) as c:
        assert c.post("/predict/demo", json=records).json()["model_version"] == "v0002"
        monkeypatch.setenv("CALMOPS_MODEL_KEY", "k" * 40)
        store.set_champion("v0001", block="test", decision="promoted")  # an unsigned version
        response = c.post("/predict/demo", json=records)
        assert response.status_code == 200 and response.json()["model_version"] == "v0002"  # the previous stays
        served = c.get("/pipelines/demo").json()["served"]
        assert served["loaded_version"] == "v0002" and "manifest is not signed" in served["reload_error"]
    with TestClient(create_app(home)) as c:  # a fresh server has nothing it may serve
        response = c.post("/predict/demo", json=records)
        assert response.status_code == 503 and "manifest is not signed" in response.json()["detail"]


def test_reports_are_served_for_the_links_of_the_dagster_ui(client, processed_home):
    home, _ = processed_home
    block = client.get("/reports/demo/4.html")
    assert block.status_code == 200 and block.headers["content-type"].startswith("text/html")
    assert block.content == (home.reports_dir("demo") / "4.html").read_bytes()
    assert client.get("/reports/demo/plotly.min.js").status_code == 200
    page = client.get("/reports/demo/")
    assert page.status_code == 200 and "Champion: <b>v0002</b>" in page.text
    assert client.get("/reports/nobody/").status_code == 404
    assert client.get("/reports/demo/9.html").status_code == 404


@pytest.mark.parametrize("path", [
    "/reports/demo/..%2Fpipeline.yaml", "/reports/demo/..", "/reports/demo/.%2E%2F..%2Fmetrics.duckdb",
    "/reports/demo/%2Fetc%2Fpasswd", "/reports/..%2Fdemo/4.html", "/reports/demo/.4.html.tmp",
    "/reports/demo/4.html%00.png",
])
def test_report_paths_cannot_leave_the_report_folder(client, path):
    answer = client.get(path)
    assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])


def test_reports_need_the_api_key_as_header_or_query(processed_home):
    home, _ = processed_home
    with TestClient(create_app(home, api_key="s3cret")) as c:
        assert c.get("/reports/demo/4.html").status_code == 401
        assert c.get("/reports/demo/4.html?key=wrong").status_code == 401
        assert c.get("/reports/demo/4.html?key=s3cret").status_code == 200
        assert c.get("/reports/demo/4.html", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/pipelines?key=s3cret").status_code == 401  # the query form is for report pages only


def body_schema(openapi: dict, name: str = "demo") -> dict:
    return openapi["paths"][f"/predict/{name}"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_openapi_describes_the_champions_columns_and_every_answer(processed_home):
    home, _ = processed_home
    with TestClient(create_app(home, max_rows=50)) as c:
        doc = c.get("/openapi.json").json()
    records, columns_form = body_schema(doc)["oneOf"]
    record = records["items"]
    assert record["required"] == FEATURES and record["additionalProperties"] is False
    assert record["properties"]["x1"]["type"] == ["number", "null"] and record["properties"]["x1"]["maximum"] > 3e38
    assert record["properties"]["segment"] == {"type": ["string", "null"]}
    assert records["maxItems"] == 50 and records["minItems"] == 1
    assert columns_form["properties"]["columns"] == {"const": FEATURES}
    responses = doc["paths"]["/predict/demo"]["post"]["responses"]
    assert {"200", "400", "404", "408", "413", "415", "422", "503"} <= set(responses) and "401" not in responses
    assert doc["paths"]["/pipelines/{name}"]["get"]["parameters"][0]["schema"]["pattern"].startswith("^[A-Za-z]")
    assert "HTTPValidationError" not in str(doc)
    assert "securitySchemes" not in doc.get("components", {}) and "security" not in str(doc["paths"])
    with TestClient(create_app(home, api_key="secret")) as c:
        doc = c.get("/openapi.json", headers={"X-API-Key": "secret"}).json()
    assert doc["components"]["securitySchemes"]["APIKeyHeader"] == {"type": "apiKey", "in": "header",
                                                                     "name": "X-API-Key"}
    assert doc["paths"]["/predict/demo"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert "401" in doc["paths"]["/pipelines"]["get"]["responses"] and "security" not in doc["paths"]["/health"]["get"]


def test_deeply_nested_and_non_json_numbers_are_400(client):
    for depth in (33, 1_000, 100_000):
        response = client.post("/predict/demo", content=b"[" * depth + b"]" * depth)
        assert response.status_code == 400 and f"nested {depth} levels deep" in response.json()["detail"]
    brackets_in_text = [{"x1": 1.0, "x2": 1.0, "x3": 0.0, "x4": 0.0, "segment": "[" * 100 + '\\"{'}]
    assert client.post("/predict/demo", json=brackets_in_text).status_code == 200
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'[{"x1": ' + constant + b', "x2": 1, "x3": 0, "x4": 0, "segment": "a"}]'
        response = client.post("/predict/demo", content=body)
        assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]


@pytest.mark.parametrize("value", ["10" * 200, "1e39", "-1e39", "1e400"])
def test_numbers_outside_float_range_are_422_naming_the_column(client, value):
    for body in (f'[{{"x1": 1, "x2": {value}, "x3": 0, "x4": 0, "segment": "a"}}]',
                 f'{{"columns": {FEATURES!r}, "data": [[1, {value}, 0, 0, "a"]]}}'.replace("'", '"')):
        response = client.post("/predict/demo", content=body.encode())
        assert response.status_code == 422, response.text
        assert "column 'x2' holds a number outside the float range" in response.json()["detail"]
    edge = [{"x1": 3.4e38, "x2": -3.4e38, "x3": 0, "x4": 0, "segment": "a"}]
    assert client.post("/predict/demo", json=edge).status_code == 200


def test_unseen_categories_are_answered_with_warnings(client, rows):
    records = rows.head(3).to_dict(orient="records")
    records[0]["segment"], records[2]["segment"] = "never-seen", "never-seen"
    response = client.post("/predict/demo", json=records)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3
    (warning,) = response.json()["warnings"]
    assert warning["column"] == "segment" and warning["value"] == "never-seen" and warning["rows"] == 2
    assert client.post("/predict/demo", json=rows.head(3).to_dict(orient="records")).json()["warnings"] == []


def test_a_pointer_to_another_pipelines_model_is_never_served(processed_home, tmp_path, rows):
    """A champion pointer edited to ``../../other/models/v0001`` made the server answer from another pipeline's
    model: it is refused with the reason (503), and the champion loaded before keeps serving."""
    import shutil

    home = copy_home(processed_home, tmp_path)
    shutil.copytree(home.models_dir("demo"), home.models_dir("other"))  # another pipeline's models
    pointer = home.models_dir("demo") / "champion.json"
    with TestClient(create_app(home)) as c:
        records = rows.head(2).to_dict(orient="records")
        assert c.post("/predict/demo", json=records).json()["model_version"] == "v0002"
        pointer.write_text('{"version": "../../other/models/v0001", "history": []}')
        answer = c.post("/predict/demo", json=records)
        assert answer.status_code == 200 and answer.json()["model_version"] == "v0002"
        served = c.get("/pipelines/demo")
        assert served.status_code == 503 and "not a model version of 'demo'" in served.json()["detail"]
    with TestClient(create_app(home)) as c:  # a fresh server has nothing to fall back on
        answer = c.post("/predict/demo", json=records)
        assert answer.status_code == 503 and "champion pointer names '../../other/models/v0001'" in answer.text


@pytest.mark.parametrize("pointer", ["{not json", "[]", '{"version": 7, "history": []}'])
def test_a_corrupt_champion_pointer_is_503_with_the_reason(processed_home, tmp_path, rows, pointer):
    home = copy_home(processed_home, tmp_path)
    (home.models_dir("demo") / "champion.json").write_text(pointer)
    with TestClient(create_app(home)) as c:
        listed = c.get("/pipelines")
        assert listed.status_code == 200 and "champion pointer is not" in listed.json()[0]["error"]
        status = c.get("/pipelines/demo")
        assert status.status_code == 503 and "champion.json: champion pointer is not" in status.json()["detail"]
        predicted = c.post("/predict/demo", json=rows.head(2).to_dict(orient="records"))
        assert predicted.status_code == 503 and "champion pointer is not" in predicted.json()["detail"]


def test_openapi_and_docs_need_the_key_when_one_is_set(processed_home):
    """They name the pipelines, champion versions and columns; a browser passes the key as ``?key=``."""
    home, _ = processed_home
    with TestClient(create_app(home, api_key="s3cret")) as c:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert c.get(path).status_code == 401, path
            assert c.get(f"{path}?key=wrong").status_code == 401, path
            assert c.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
        assert "/predict/demo" in c.get("/openapi.json?key=s3cret").json()["paths"]
        for path in ("/docs", "/redoc"):  # the page loads the document with the key it was opened with
            assert "/openapi.json?key=s3cret" in c.get(f"{path}?key=s3cret").text, path
        assert c.get("/docs", headers={"X-API-Key": "s3cret"}).text.count("/openapi.json'") == 1
    with TestClient(create_app(home)) as c:  # without a key configured, open as before
        assert c.get("/openapi.json").status_code == 200 and c.get("/redoc").status_code == 200
        assert "'/openapi.json'" in c.get("/docs").text


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml", "json"])
def test_a_content_type_other_than_json_is_415(client, rows, content_type):
    body = rows.head(2).to_json(orient="records").encode()
    response = client.post("/predict/demo", content=body, headers={"content-type": content_type})
    assert response.status_code == 415, response.text
    assert response.json()["detail"].startswith(f"Content-Type '{content_type}' is not JSON")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.api+json", None])
def test_json_content_types_and_none_are_accepted(client, rows, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict/demo", content=rows.head(2).to_json(orient="records").encode(),
                           headers=headers)
    assert response.status_code == 200, response.text


def _champion_object(home, model) -> str:
    """Save ``model`` as a new version of demo with v0002's reference and columns; make it the champion."""
    store = ModelStore(home.models_dir("demo"))
    manifest = store.manifest("v0002")
    version = store.save(model, store.reference("v0002"), features=manifest["features"],
                         feature_kinds=manifest["feature_kinds"], task="classification")
    store.set_champion(version, block="test", decision="promoted")
    return version


def test_a_loaded_object_without_predict_is_503_with_the_reason(processed_home, tmp_path, rows):
    from sklearn.preprocessing import StandardScaler

    home = copy_home(processed_home, tmp_path)
    records = rows.head(2).to_dict(orient="records")
    with TestClient(create_app(home)) as c:
        assert c.post("/predict/demo", json=records).json()["model_version"] == "v0002"
        version = _champion_object(home, StandardScaler().fit(rows[["x1", "x2"]]))
        response = c.post("/predict/demo", json=records)  # the previous champion stays
        assert response.status_code == 200 and response.json()["model_version"] == "v0002"
        assert "has no predict method" in c.get("/pipelines/demo").json()["served"]["reload_error"]
    with TestClient(create_app(home)) as c:  # a fresh server has nothing it can serve
        response = c.post("/predict/demo", json=records)
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == (f"pipeline 'demo' has no usable champion model: CalmOpsError: {version} "
                                         "holds a StandardScaler, which has no predict method")


def test_a_champion_that_cannot_predict_is_503_not_a_row_error(processed_home, tmp_path, rows):
    """An unfitted model has ``predict`` but fails on any rows: the object is at fault, not the request."""
    from sklearn.ensemble import RandomForestClassifier

    home = copy_home(processed_home, tmp_path)
    version = _champion_object(home, RandomForestClassifier(n_estimators=3, random_state=0))
    with TestClient(create_app(home)) as c:
        response = c.post("/predict/demo", json=rows.head(2).to_dict(orient="records"))
    assert response.status_code == 503, response.text
    assert response.json()["detail"].startswith(f"champion {version} cannot predict: NotFittedError: ")
