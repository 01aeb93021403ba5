"""The OpenAPI document against the live stack: every route documented, schemathesis finds no 5xx
and no answer outside the document, and /docs shows every path in a real (headless) Chromium."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import requests
import schemathesis
from browser import headless_chromium
from conftest import Stack
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from common.settings import Settings
from gateway.app import create_app
from gateway.openapi import document

# Bounded: N generated examples per operation (fuzzing) plus the documented examples.
MAX_EXAMPLES = 12
# positive: schema-valid requests; negative: requests breaking the schema, which must be refused
# with a 4xx (schemathesis' negative_data_rejection check)
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
CASES: Counter[str] = Counter()


def test_every_route_is_documented() -> None:
    """A route added without its entry in gateway.openapi fails here."""
    app = create_app(Settings())
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD" and "/docs/" not in route.resource.canonical
    }
    paths = document(Settings())["paths"]
    documented = {(method, path) for path, ops in paths.items() for method in ops}
    assert served - {("get", "/docs/")} == documented


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> OpenApiSchema:
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
            # schemathesis' default refusals plus 413: a field over its length bound is refused by
            # the form's size limits (issue 20) before validation, which is a refusal all the same
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
                }
            },
        }
    )
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json", config=config)


def test_contract(api_schema: OpenApiSchema, stack: Stack) -> None:
    """Every operation, in both modes: MAX_EXAMPLES generated cases, each answer checked against
    the document (status, content type, headers, body schema; schema-breaking requests refused
    with a 4xx) and for 5xx (503 is documented, not a crash). Not checked: that schema-valid
    input is accepted (a schema cannot say "a URL that answers" or "bytes that decode as an
    image": random ones are rightly refused with a 400)."""
    for result, mode in itertools.product(api_schema.get_all_operations(), MODES):
        try:
            _contract_cases(result.ok(), mode, stack)()
        except Unsatisfiable:  # nothing to break: no body and no constrained parameter (GET /healthz)
            assert mode == schemathesis.GenerationMode.NEGATIVE


def _contract_cases(
    operation: APIOperation, mode: schemathesis.GenerationMode, stack: Stack
) -> Callable[[], None]:
    headers = {"api_token": stack.token}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        CASES[f"{operation.label} ({mode.value})"] += 1
        response = case.call_and_validate(
            base_url=stack.url, headers=headers, timeout=60, excluded_checks=[positive_data_acceptance]
        )
        assert response.status_code < 500 or response.status_code == 503, response.text[:300]

    return run  # type: ignore[no-any-return]


def test_contract_case_count() -> None:
    """Runs after test_contract (file order): prints how many cases it sent, per operation."""
    if CASES:
        print(f"\nschemathesis cases: {sum(CASES.values())} over {len(CASES)} operations")
        for label, count in sorted(CASES.items()):
            print(f"  {count:4d} {label}")


@pytest.fixture
def chromium() -> Iterator[object]:
    with headless_chromium() as browser:
        yield browser


def test_docs_page_shows_every_path(stack: Stack, chromium: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    paths = set(requests.get(f"{stack.url}/openapi.json", timeout=10).json()["paths"])
    browser = chromium
    browser.get(f"{stack.url}/docs")  # type: ignore[attr-defined]
    wait = WebDriverWait(browser, 60)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".opblock-summary-path")))
    deadline = time.monotonic() + 30
    shown: set[str] = set()
    while time.monotonic() < deadline and shown != paths:
        elements = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")  # type: ignore[attr-defined]
        shown = {e.get_attribute("data-path") or e.text.replace("\u200b", "") for e in elements}
        time.sleep(0.2)
    assert shown == paths
    # Offline: the page's scripts came from the gateway itself, none from a CDN.
    sources = browser.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert sources and all(s.startswith(stack.url) for s in sources), sources
