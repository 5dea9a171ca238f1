"""The rootless tests' user: made fresh, with subordinate ids, for each module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nonroot import User, nonroot_user, rootless_ready


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    rootless_ready()
    with nonroot_user() as made:
        made.env["SOURCE_DATE_EPOCH"] = "0"  # every layer's times and the config's
        yield made
