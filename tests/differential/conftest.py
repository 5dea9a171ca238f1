"""The differential cases form one pytest-xdist group (``--dist loadgroup``).

One worker then runs them all: the module's store, with the Debian base imported once,
serves every case, and add_url's HTTP server holds its fixed port 18765 (recorded in
testdata/differential/add_url, so it cannot be a free one) on one worker only.  The
cases do not rely on it: only the cases that ADD from that port start the server
(test_differential.py), so a split of the group across workers still passes (it does
split with pytest >= 9.2 and pytest-xdist 3.8, whose loadgroup no longer sees the
marker: pytest-dev/pytest-xdist#1386).  Without xdist the marker does nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("differential"))
