"""Property-based requests from the live API's own OpenAPI document (schemathesis 4): for every
operation of the contract's table, schema-valid and schema-invalid requests, against unknown and
existing runs and batches; the server never answers with a 5xx, and its answers match the
document (response body schema, content type)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.api_helpers import wait_terminal
from tests.services import http_client

MAX_EXAMPLES = 30
# no 5xx, and what does come back is what the document says (body schema, content type)
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
RUN_OPERATIONS = [
    ("GET", "/runs/{run_id}"), ("GET", "/runs/{run_id}/wait"), ("GET", "/runs/{run_id}/events"),
    ("GET", "/runs/{run_id}/stream"), ("POST", "/runs/{run_id}/cancel"),
]
BATCH_OPERATIONS = [("GET", "/batches/{batch_id}"), ("POST", "/batches/{batch_id}/cancel")]
BATCH_READS = [("GET", "/batches/{batch_id}/stream"), ("GET", "/batches/{batch_id}/results")]
OPERATIONS = [
    ("POST", "/runs"), ("POST", "/runs/stream"), ("GET", "/runs"), *RUN_OPERATIONS,
    ("POST", "/batches"), *BATCH_OPERATIONS, *BATCH_READS, ("GET", "/agents"), ("GET", "/healthz"),
    ("GET", "/metrics"),
]
NO_INPUT = {("GET", "/agents"), ("GET", "/healthz"), ("GET", "/metrics")}  # nothing to make invalid
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
CASES = [(op, POSITIVE) for op in OPERATIONS] + [
    (op, NEGATIVE) for op in OPERATIONS if op not in NO_INPUT]
# with the id fixed, the batch routes but the reads (after, limit, Last-Event-ID) have nothing
# left to make invalid
EXISTING_CASES = [(op, POSITIVE) for op in RUN_OPERATIONS + BATCH_OPERATIONS + BATCH_READS] + [
    (op, NEGATIVE) for op in RUN_OPERATIONS + BATCH_READS]


def case_id(case) -> str:
    (method, path), mode = case
    return f"{method} {path} {mode.value}"


@pytest.fixture(scope="module")
def api_schema(api_url):
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


@pytest.fixture(scope="module")
def existing(api_url):
    """A finished run (so no generated wait or stream can block) and a finished batch."""
    with http_client(api_url) as http:
        run = http.post("/runs", json={"agent": "tokens", "input": {"text": "a b c"}}).json()
        batch = http.post("/batches", json={"runs": [{"agent": "echo"}]}).json()
        wait_terminal(http, run["run_id"])
        wait_terminal(http, batch["run_ids"][0])
    return {"run_id": run["run_id"], "batch_id": batch["batch_id"]}


def fuzz(operation, api_url, mode, path_parameters=None) -> None:
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(base_url=api_url, timeout=60, checks=CHECKS)

    check()


def test_the_schema_has_the_contract_routes(api_schema):
    documented = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        documented.add((operation.method.upper(), operation.path))
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_no_server_errors(api_schema, api_url, case):
    (method, path), mode = case
    fuzz(api_schema[path][method], api_url, mode)


@pytest.mark.parametrize("case", EXISTING_CASES, ids=case_id)
def test_no_server_errors_on_existing_runs_and_batches(api_schema, api_url, existing, case):
    (method, path), mode = case
    name = "run_id" if "{run_id}" in path else "batch_id"
    fuzz(api_schema[path][method], api_url, mode, {name: existing[name]})
