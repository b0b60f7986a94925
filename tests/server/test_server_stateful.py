"""Stateful fuzzing of the HTTP API (schemathesis state machine over the schema's OpenAPI
links): sequences of create -> turn -> read -> delete on real sessions, each step with
generated (valid and invalid) data, every response checked for no 5xx, documented status
codes and a body that matches its schema. Derandomised and small so the suite stays fast;
``CONVIR_FUZZ_EXAMPLES=200`` searches deeper (about 2 s per example here).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, Phase, settings

from convir.server import create_app
from server_helpers import tiny_index

EXAMPLES = int(os.environ.get("CONVIR_FUZZ_EXAMPLES", "10"))
# a schema-valid turn may still be refused by design ("answer" with no pending question: 409)
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def test_stateful_sequences_get_no_500(tmp_path_factory: pytest.TempPathFactory) -> None:
    app = create_app(tiny_index(tmp_path_factory))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    links = schema.raw_schema["paths"]["/api/sessions"]["post"]["responses"]["201"]["links"]
    assert set(links) == {"GetSession", "PostTurn", "DeleteSession"}
    steps: list[tuple[str, str, int]] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            steps.append((case.method, case.path, response.status_code))
            case.validate_response(response, excluded_checks=EXCLUDED)

    Machine.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    assert not [s for s in steps if s[2] >= 500], steps
    # the links were followed: operations on a created session found it
    on_session = [s for s in steps if "{session_id}" in s[1]]
    assert any(code in (200, 204) for _, _, code in on_session), steps
