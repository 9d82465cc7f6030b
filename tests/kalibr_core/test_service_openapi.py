"""A bounded schemathesis run against the service's own OpenAPI document: every answer is documented.

Schemathesis generates requests from the document (valid and invalid bodies, queries, headers) and checks each
answer: no 5xx, a status the document lists for that route, and a body matching the documented schema.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kalibr.service import create_app, hash_api_key
from kalibr.service._server import serve_in_thread
from kalibr.stores import MemoryStore

pytestmark = pytest.mark.slow
API_KEY = "kal_schemathesis_key"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_answer_is_documented() -> None:
    store = MemoryStore()
    store.add_api_key("acme", hash_api_key(API_KEY))
    with serve_in_thread(create_app(store)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 14
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def answers_as_documented(case: schemathesis.Case) -> None:
                # A valid key unless the case sends one of its own (then 401/403 must be documented too).
                key = {} if case.headers and "X-API-Key" in case.headers else {"X-API-Key": API_KEY}
                case.call_and_validate(headers=key, checks=CHECKS)

            answers_as_documented()
