"""A bounded, deterministic schemathesis run over /api/openapi.json, in process (WSGI), logged in with a
browser session: no 5xx but a deliberate 503, and every error is JSON in its documented shape."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable

from conftest import make_settings


EXAMPLES = 15  # per operation and generation mode: several hundred requests, under a minute here
# logging out would turn the rest of the run into 401s
SKIP = {("DELETE", "/api/v1/sessions")}
READINESS = {"/readyz", "/v2/health/ready"}
# a successful login (schemathesis reuses the users it registered) rotates the session it came with:
# these go without ours
ANONYMOUS = {("POST", "/api/v1/sessions"), ("POST", "/api/v1/users")}


@pytest.fixture
def settings(mysql_db, redis_prefix, tmp_path):
    # generous rate limits (a fuzzer is one very busy user) and no long waits for a worker that is not there
    return make_settings(mysql_db, redis_prefix, tmp_path, rate_limit_per_minute=1e9, rate_limit_burst=10**9,
                         max_wait=0.2)


def problem_with(path: str, response) -> str | None:
    status = response.status_code
    if status >= 500 and status != 503:
        return f"status {status}"
    if status < 400:
        return None
    if status == 503 and path in READINESS:  # documented: the readiness report itself, not an error
        return None if (response.headers.get("content-type") or [""])[0].startswith("application/json") \
            else "a 503 readiness report that is not JSON"
    content_type = (response.headers.get("content-type") or [""])[0]
    if not content_type.startswith("application/json"):
        return f"status {status} as {content_type!r}"
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return f"status {status} without an error object"
    if path.startswith("/v2"):  # the inference protocol's own shape: {"error": "..."}
        return None if isinstance(error, str) else f"status {status}: v2 error is not a string"
    if not (isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
        return f"status {status}: error is not {{code, message}}"
    return None


def test_fuzzing_the_documented_api_finds_no_5xx_and_only_json_errors(app, account, registered_mlp):
    from server.services.accounts import SESSION_COOKIE

    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app.app)
    cookies = {SESSION_COOKIE: app.cookies[SESSION_COOKIE]}
    headers = {"X-CSRF-Token": account.csrf}
    statuses: Counter = Counter()
    failures: list[str] = []
    unsatisfiable: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20

    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for mode in schemathesis.GenerationMode:
            @hypothesis_settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                                 phases=[Phase.explicit, Phase.generate],
                                 suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(mode))
            def run(case):
                # the schema's security schemes make schemathesis invent Authorization headers and
                # cookies, which would turn most cases into 401s: authenticate as the session instead
                # (rejected credentials are test_auth.py's business)
                case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
                if (operation.method.upper(), operation.path) not in ANONYMOUS:
                    case.cookies = {**(case.cookies or {}), **cookies}
                response = case.call(headers=headers)
                statuses[response.status_code] += 1
                problem = problem_with(operation.path, response)
                if problem:
                    failures.append(f"{operation.method.upper()} {case.formatted_path}: {problem}: "
                                    f"{response.content[:200]!r}")

            try:
                run()
            except Unsatisfiable:  # no negative case exists for an operation without inputs
                unsatisfiable.append(f"{operation.method.upper()} {operation.path} {mode.value}")

    print(f"schemathesis: {sum(statuses.values())} requests over {len(operations)} operations, "
          f"statuses {dict(sorted(statuses.items()))}; nothing to generate for {unsatisfiable}")
    assert not failures, "\n".join(failures[:30])
    assert sum(statuses.values()) >= len(operations) * EXAMPLES / 2
