"""Cloud tests: local servers speaking each provider's wire format, and an engine pointed at them."""

from __future__ import annotations

import pytest

from tests.engine.wire.stack import CloudStack, LoggedEngine


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    servers = CloudStack(tmp_path_factory.mktemp("cloud"))
    yield servers
    servers.close()


@pytest.fixture(scope="module")
def engine(stack):
    harness = LoggedEngine(stack.env(), stack.folder / "engine.log")
    yield harness
    harness.close()


@pytest.fixture(autouse=True)
def fresh(request):
    """Each test starts with empty request logs and default server behaviour."""
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").reset()
