"""A bounded schemathesis run against the service's own OpenAPI document, counted (used by a test and the benchmark).

Schemathesis generates requests from the document (valid and invalid bodies, queries, headers) for every route;
each answer is checked and every failed check counted: a 5xx, a status the document does not list for that route,
or a body (or content type) that does not match the documented schema.

Usage::

    result = run_bounded_schema_run(examples_per_route=15)
    assert (result.server_errors, result.undocumented_statuses, result.schema_violations) == (0, 0, 0)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

API_KEY = "kal_schemathesis_key"


@dataclass
class SchemaRunResult:
    operations: int = 0
    requests: int = 0
    server_errors: int = 0
    undocumented_statuses: int = 0
    schema_violations: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    """What each failed check said (method, path, status, message), for a test's failure message."""


def run_bounded_schema_run(examples_per_route: int = 15) -> SchemaRunResult:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from kalibr.service import create_app, hash_api_key
    from kalibr.service._server import serve_in_thread
    from kalibr.stores import MemoryStore

    counted = (
        ("server_errors", not_a_server_error),
        ("undocumented_statuses", status_code_conformance),
        ("schema_violations", content_type_conformance),
        ("schema_violations", response_schema_conformance),
    )
    result = SchemaRunResult()
    store = MemoryStore()
    store.add_api_key("acme", hash_api_key(API_KEY))
    with serve_in_thread(create_app(store)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [found.ok() for found in schema.get_all_operations()]
        result.operations = len(operations)
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=examples_per_route, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            def answer(case: schemathesis.Case) -> None:
                # A valid key unless the case sends one of its own (then 401/403 must be documented too).
                key = {} if case.headers and "X-API-Key" in case.headers else {"X-API-Key": API_KEY}
                response = case.call(headers=key)
                result.requests += 1
                result.statuses[response.status_code] += 1
                for kind, check in counted:
                    try:
                        case.validate_response(response, checks=[check], headers=key)
                    except FailureGroup as failure:
                        setattr(result, kind, getattr(result, kind) + 1)
                        where = f"{case.method} {case.path} -> {response.status_code}"
                        result.failures.append(f"{where}: {str(failure)[:300]}")

            answer()
    return result
