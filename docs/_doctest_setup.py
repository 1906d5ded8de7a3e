"""What runs around each documentation page's examples, hidden: a clean slate, no servers.

One setup for both ways the examples run:

* pytest (``python -m pytest`` collects ``docs/*.rst``): ``docs/conftest.py`` calls
  :func:`start` before each page and :func:`stop` after it, and puts the namespace into
  ``doctest_namespace``; :func:`shutdown` ends the session.
* Sphinx (``sphinx-build -b doctest docs docs/_build/doctest``): ``doctest_global_setup``
  in ``conf.py`` calls :func:`start` for each page and ``doctest_global_cleanup`` calls
  :func:`stop`; what is still running at exit is stopped by :mod:`atexit`.

Every page starts in a new empty temporary folder (its files land there), with the
variables that point dlutils at services cleared and given back afterwards. The servers
are the page's own business: each page shows, at its top, the lines of
:mod:`dlutils.sandbox` that start what it uses, so a reader can run it as it is shown.
:func:`stop` stops them (``sandbox.stop_all``) and any job the page left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

#: Variables a page sets; their previous values come back when the page ends.
ENV_NAMES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "STORAGE_EMULATOR_HOST",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "DLUTILS_HOME",
)


def start() -> dict[str, Any]:
    """Begin a page: clear the variables, enter a new temporary folder.

    Returns the names the page may use without defining them: ``workdir`` (the temporary
    folder) and ``docs_dir`` (the docs folder itself, wherever dlutils is installed).
    """
    if _page:
        stop()
    import dlutils

    saved = {name: os.environ.get(name) for name in ENV_NAMES}
    workdir = tempfile.mkdtemp(prefix="dlutils-docs-")
    jobs = {job.id for job in dlutils.list_jobs()}
    _page.update(env=saved, cwd=os.getcwd(), workdir=workdir, jobs=jobs)
    for name in ENV_NAMES:
        os.environ.pop(name, None)
    os.environ["DLUTILS_HOME"] = os.path.join(workdir, ".dlutils-home")
    os.chdir(workdir)
    return {"workdir": workdir, "docs_dir": HERE}


def stop() -> None:
    """End a page: its jobs, its stand-ins, then the environment and the current folder."""
    if not _page:
        return
    try:
        import dlutils
        from dlutils import sandbox

        mine = [job for job in dlutils.list_jobs() if job.id not in _page["jobs"]]
        for job in mine:  # a page never leaves a job running, nor one in the registry
            job.abort()
            if job.status().state.value != "pending":
                job.wait(30)
            dlutils.remove_job(job.id)
        sandbox.stop_all()
    finally:
        os.chdir(_page["cwd"])
        for name, value in _page["env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(_page["workdir"], ignore_errors=True)
        _page.clear()


def shutdown() -> None:
    """Stop everything, the process-wide S3 server included."""
    from dlutils import sandbox

    stop()
    sandbox._shutdown()


_page: dict[str, Any] = {}
