"""pytest runs every example of ``docs/*.rst`` against local servers (see ``_doctest_setup``).

``docs`` is a package (``docs/__init__.py``) so that this file is imported as
``docs.conftest`` and never replaces ``tests/conftest.py``, which test modules import by
the name ``conftest``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import _doctest_setup

# conf.py is Sphinx's, the setup module is imported above; _build holds the built site.
collect_ignore = ["conf.py", "_doctest_setup.py", "_ext", "_build"]


@pytest.fixture(scope="session")
def _docs_session() -> Iterator[None]:
    yield
    _doctest_setup.shutdown()


@pytest.fixture(scope="module", autouse=True)
def docs_page(_docs_session: None, doctest_namespace: dict) -> Iterator[None]:
    """Fresh servers, environment and current folder for each page, as Sphinx gives it."""
    namespace = _doctest_setup.start()
    doctest_namespace.update(namespace)
    try:
        yield
    finally:
        for name in namespace:
            doctest_namespace.pop(name, None)
        _doctest_setup.stop()
