"""A bounded schemathesis run against the service's own OpenAPI document: every answer is documented.

Schemathesis generates requests from the document (valid and invalid bodies, queries, headers) and checks each
answer: no 5xx, a status the document lists for that route, and a body matching the documented schema. The same
run at the same size gives the counts of the benchmark page (``tests/openapi_run.py``).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_every_answer_is_documented() -> None:
    from tests.openapi_run import run_bounded_schema_run

    result = run_bounded_schema_run(examples_per_route=15)
    assert result.operations >= 14
    assert result.requests >= result.operations * 5
    assert (result.server_errors, result.undocumented_statuses, result.schema_violations) == (0, 0, 0), result.failures
