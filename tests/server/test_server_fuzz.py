"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), in-process
against the ASGI app: every operation, schema-valid and schema-invalid requests, each response
checked for no 5xx, documented status codes and content types, bodies that match the
response schema, and invalid data rejected.

Session routes need a real session to get past the 404: half of their cases run on a fresh
session created just for that case, with its owner secret. Derandomised so CI is
reproducible; ``CONVIR_FUZZ_EXAMPLES=500`` runs a deeper (still derandomised) search.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation import GenerationMode

from convir.server import create_app
from server_helpers import tiny_index

EXAMPLES = int(os.environ.get("CONVIR_FUZZ_EXAMPLES", "20"))
TIMEOUT_S = 120  # per request: generous, the machine may be busy (a slow call is not a finding)
PLACEHOLDER = "FreshSessionFor-Fuzzing"  # replaced by a new real session's id in each such case
HEADER = "X-Session-Secret"
# schema-valid but semantically refused requests are a 4xx by design (an unknown strategy
# name is a 400, "answer" without a pending question a 409), so positive data may be refused
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return create_app(tiny_index(tmp_path_factory))  # warm: the first search must not time out


def test_fuzzed_requests_on_every_operation_get_no_500(app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    client = TestClient(app)
    failures: dict[str, str] = {}
    ran: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        has_input = bool(op.path_parameters or op.query or op.headers or op.body)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not has_input:
                continue  # nothing to make invalid
            strategy = op.as_strategy(generation_mode=mode)
            if "{session_id}" in op.path:
                strategy = strategy | op.as_strategy(
                    generation_mode=mode, path_parameters={"session_id": PLACEHOLDER}
                )

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def check(case: Any) -> None:
                if case.path_parameters and case.path_parameters.get("session_id") == PLACEHOLDER:
                    fresh = client.post("/api/sessions", json={"description": "a red square"}).json()
                    case.path_parameters["session_id"] = fresh["id"]
                    case.headers = {**(case.headers or {}), HEADER: fresh["secret"]}
                case.call_and_validate(excluded_checks=EXCLUDED, timeout=TIMEOUT_S)

            try:
                check()
            except Exception as exc:  # schemathesis' failure report names the check and the curl
                failures[f"{op.label} [{mode.value}]"] = str(exc)[:2000]
            ran.append(f"{op.label} [{mode.value}]")
    assert len(ran) >= 15, ran  # every route of the API was fuzzed
    assert not failures, "\n\n".join(f"== {k}\n{v}" for k, v in failures.items())


def test_fuzzing_reaches_real_sessions(app: Any) -> None:
    """The PLACEHOLDER route really exercises the turn code (not only 404s)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    op = schema["/api/sessions/{session_id}/turns"]["POST"]
    client = TestClient(app)
    statuses: list[int] = []

    @settings(max_examples=15, deadline=None, derandomize=True, database=None)
    @given(case=op.as_strategy(path_parameters={"session_id": PLACEHOLDER}))
    def check(case: Any) -> None:
        fresh = client.post("/api/sessions", json={"description": "a red square"}).json()
        case.path_parameters["session_id"] = fresh["id"]
        case.headers = {**(case.headers or {}), HEADER: fresh["secret"]}
        statuses.append(case.call(timeout=TIMEOUT_S).status_code)

    check()
    # 200 (a turn applied) or 409 (e.g. no pending question): the session was found and used
    assert 404 not in statuses and {200, 409} & set(statuses), statuses
