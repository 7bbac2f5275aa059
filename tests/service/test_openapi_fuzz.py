"""Schemathesis over the live service's own OpenAPI document.

Every operation is called with generated data (an operator token attached; node routes
get generated, hence invalid, signatures): no response may be a 5xx, and every response
must match the documented status codes, content types and schemas. The only 5xx
allowed is the documented 503 for telemetry that never arrived.
"""

from __future__ import annotations

import schemathesis

# Imported at collection, before the fleet server's threads start: from_url imports this
# lazily, pytest's assertion rewriter then parses it while other threads compile, and
# CPython 3.11.7's AST recursion counter is not thread-safe (a CI run failed with
# 'SystemError: AST constructor recursion depth mismatch').
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.fleet_server import FleetServer

CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


MAX_EXAMPLES = 40


def test_live_api_conforms_to_its_schema(fleet_server: FleetServer) -> None:
    # The schemathesis pytest plugin (from_fixture) does not run under pytest 9, so each
    # operation's strategy is driven by Hypothesis directly.
    schema = schemathesis.openapi.from_url(fleet_server.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {fleet_server.token()}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def call_and_check(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            if response.status_code == 503:
                # The one 5xx the API promises: telemetry asked for where none arrived
                # (documented; the issue requires 503, never a made-up value).
                assert response.json()["detail"].startswith("no telemetry from ")
                case.validate_response(response, checks=CONFORMANCE)
            else:
                case.validate_response(response, checks=[not_a_server_error, *CONFORMANCE])

        call_and_check()
        tested.append(operation.label)
    assert len(tested) >= 8, tested
