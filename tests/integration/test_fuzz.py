"""Property-based fuzzing of the OpenAPI contract (schemathesis): no input makes a server error.

Schemathesis generates bodies from the schema BentoML serves at /docs.json, both valid ones and
ones that break it on purpose (negative mode), a bounded number per operation. Every answer must
be below 500, and every 4xx must carry Graft's error shape.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from service.app import Graft
from tests.integration.conftest import graft_client

schema = schemathesis.openapi.from_dict(Graft.openapi_spec.asdict())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=25
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz")
    # Every valid /v1/jobs/train body queues a job: a full queue's 503 would read as a fault.
    with graft_client(
        home, admin_key="fuzz-admin", max_examples="200", max_queued_jobs="1000"
    ) as client:
        yield client


def _encode(body: object) -> bytes:
    """The body as the wire would carry it; negative mode also makes bodies JSON cannot hold."""
    if isinstance(body, bytes):
        return body
    try:
        return json.dumps(body).encode()
    except (TypeError, ValueError):
        return repr(body).encode()


@schema.include(method="POST").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_is_a_server_error(case, fuzz_client):
    headers = {**(case.headers or {}), "X-Tenant-ID": "fuzz"}
    if case.path.startswith("/v1/admin/"):
        headers["Authorization"] = "Bearer fuzz-admin"
    response = fuzz_client.request(
        case.method, case.formatted_path, content=_encode(case.body), headers=headers
    )
    assert response.status_code < 500, (case.body, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), (
            case.method,
            case.formatted_path,
            response.text,
        )
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
