"""The rootless tests' user: tests/conftest.py's ``rootless_user``, one per module."""

from __future__ import annotations

import pytest
from nonroot import User


@pytest.fixture(scope="module")
def user(rootless_user: User) -> User:
    return rootless_user
