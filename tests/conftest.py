"""Session fixtures: one real broker and one real Redis server for the whole run.

Each test gets its own topic prefix and Redis key prefix, so tests never see each
other's data. Set JUKEBOX_KAFKA_BOOTSTRAP / JUKEBOX_REDIS_URL to run the
integration tests against external servers instead of the embedded ones.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Rich sizes tables to the terminal; tests read whole cells, whatever runs them (xdist
# workers have no terminal and would get 80 columns).
os.environ["COLUMNS"] = "200"

from dataflows.local_stack import LocalStack, create_topics
from schemas.topics import Topics


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack | None]:
    if os.environ.get("JUKEBOX_KAFKA_BOOTSTRAP") and os.environ.get("JUKEBOX_REDIS_URL"):
        yield None
        return
    stack = LocalStack()
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_stack: LocalStack | None) -> str:
    return local_stack.kafka_bootstrap if local_stack else os.environ["JUKEBOX_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def redis_url(local_stack: LocalStack | None) -> str:
    return local_stack.redis_url if local_stack else os.environ["JUKEBOX_REDIS_URL"]


@pytest.fixture
def test_namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topics(kafka_bootstrap: str, test_namespace: str) -> Topics:
    """A fresh, created set of every topic under a per-test prefix."""
    names = Topics(prefix=f"{test_namespace}.")
    create_topics({"bootstrap.servers": kafka_bootstrap}, names.specs())
    return names


@pytest.fixture
def redis_key_prefix(test_namespace: str) -> str:
    return f"{test_namespace}:jb"
