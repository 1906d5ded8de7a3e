"""The ways to make a :class:`~dlutils.Job`: one per request type of the AIStore downloader.

``Job.single``, ``Job.multi``, ``Job.range``, ``Job.backend``, ``Job.hf`` and
``Job.from_request`` are these functions as class methods (``cls`` is :class:`Job`); each
turns a user's input into a request's tasks (:mod:`dlutils.jobs.tasks`) and the job's
options, checked once here (:func:`_options`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..destinations import resolve
from ..errors import InvalidInputError
from ..options import Options, make_options
from . import tasks as plans

if TYPE_CHECKING:
    from .runner import Job


def single(
    cls,
    link: str,
    dest: str | os.PathLike,
    object_name: str | None = None,
    *,
    options: Options | None = None,
    **opts: Any,
) -> Job:
    """One link, saved as ``object_name`` (default: the link's last path element).

    ``options`` and ``**opts``: the job's options, :class:`dlutils.Options` (its
    fields as keywords, such as ``connections=4, timeout="30s"``).
    """
    dest = resolve(dest)
    return cls(plans.single(link, dest, object_name), dest, _options(options, opts))


def multi(
    cls,
    objects: Iterable[str] | Mapping[str, str],
    dest: str | os.PathLike,
    *,
    options: Options | None = None,
    **opts: Any,
) -> Job:
    """A list of links (named after their last path element) or a dict name -> link.

    Two links that would be saved under the same name are an error listing
    every clash (the AIStore downloader silently keeps the last one). ``options``
    and ``**opts``: the job's options (:class:`dlutils.Options`).
    """
    dest = resolve(dest)
    return cls(plans.multi(objects, dest), dest, _options(options, opts))


def range(
    cls,
    template: str,
    dest: str | os.PathLike,
    subdir: str | None = None,
    *,
    options: Options | None = None,
    **opts: Any,
) -> Job:
    """A brace template of links, expanded lazily (see :mod:`dlutils.templates`).

    The ranges must vary in the last path element, so that every link gets a
    name of its own; ``subdir`` is joined in front of the names. ``options`` and
    ``**opts``: the job's options (:class:`dlutils.Options`).
    """
    dest = resolve(dest)
    return cls(plans.range_(template, dest, subdir), dest, _options(options, opts))


def backend(
    cls,
    bucket_uri: str,
    dest: str | os.PathLike,
    prefix: str = "",
    suffix: str = "",
    sync: bool = False,
    *,
    options: Options | None = None,
    **opts: Any,
) -> Job:
    """Everything in a bucket (``s3://``, ``gs://``, ``ais://``) under a prefix.

    Local names are the object names relative to the folder in ``bucket_uri``
    (``s3://bucket/train/`` puts ``train/a/0.tar`` at ``dest/a/0.tar``); ``prefix``
    and ``suffix`` filter them. Objects already current are skipped with no
    request. With ``sync=True``, once the whole listing has been seen, local files
    this job's bucket put there (as the folder's manifest records) whose objects
    are gone are deleted; files from elsewhere, or changed by hand, are kept.
    ``options`` and ``**opts``: the job's options (:class:`dlutils.Options`).
    """
    dest = resolve(dest)
    options = _options(options, opts)
    plan = plans.backend(bucket_uri, dest, prefix, suffix, sync, options)
    return cls(plan, dest, options)


def hf(
    cls,
    dest: str | os.PathLike,
    dataset: str | None = None,
    model: str | None = None,
    file: str | None = None,
    revision: str = "main",
    token: str | None = None,
    parquet: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    blob_threshold: int | str | None = None,
    *,
    options: Options | None = None,
    **opts: Any,
) -> Job:
    """A HuggingFace dataset or model repository (or one ``file`` of it).

    Files keep their folders under ``dest``; sizes and LFS sha256 from the listing
    are the expected size and checksum and the freshness record, so a re-run
    fetches nothing unchanged. ``token`` (or ``HF_TOKEN``) goes to the hub only.
    With ``parquet=True``, a dataset's parquet export is fetched instead, as
    ``<config>/<split>/NNNN.parquet``. ``include``/``exclude`` are glob patterns.
    Files of at least ``blob_threshold`` bytes (an int or ``"1GiB"``) are fetched
    one at a time over several connections, the others together in the pool.
    ``options`` and ``**opts``: the job's options (:class:`dlutils.Options`).
    """
    dest = resolve(dest)
    if token is not None:
        opts = {**opts, "token": token}
    options = _options(options, opts)
    token = options.token
    plan = plans.hub(
        dest,
        dataset=dataset,
        model=model,
        file=file,
        revision=revision,
        token=token,
        parquet=parquet,
        include=include,
        exclude=exclude,
        blob_threshold=blob_threshold,
        options=options,
    )
    return cls(plan, dest, options)


def from_request(cls, body: Mapping[str, Any], dest: str | os.PathLike) -> Job:
    """A job from an AIStore downloader request body (a dict, as parsed from JSON).

    ``type`` is ``single`` (``link``, ``object_name``), ``multi`` (``objects``: a
    list of links or a map name -> link), ``range`` (``template``, ``subdir``) or
    ``backend`` (``bucket``, ``prefix``, ``suffix``, ``sync``, also spelt
    ``synchronize``); common fields are ``description``, ``timeout`` (a duration
    such as ``"1m30s"``: the time one attempt at one object may take, see
    :func:`dlutils.download`), ``limits`` (``connections``, ``bytes_per_hour``) and
    ``headers``.

    As in the AIStore downloader, a link or template without a scheme is an
    ``http://`` link (``"randomwebsite.com/some_dir/object{200..300}log.txt"``), a
    ``subdir`` may end with ``/``, and a backend ``bucket`` with no provider (or
    provider ``"ais"``) is an AIStore bucket of the cluster ``AIS_ENDPOINT`` names.

    Examples
    --------
    >>> import tempfile
    >>> from dlutils import Job
    >>> with tempfile.TemporaryDirectory() as dest:
    ...     job = Job.from_request({
    ...         "type": "range",
    ...         "bucket": {"name": "test"},
    ...         "template": "randomwebsite.com/some_dir/object{200..300}log.txt",
    ...         "subdir": "some/subdir/",
    ...     }, dest)
    ...     print(job.status().total, job.description.split(" -> ")[0])
    101 http://randomwebsite.com/some_dir/object{200..300}log.txt
    """
    return plans.read_request(body)(cls, dest)


def _options(options: Options | None, opts: Mapping[str, Any]) -> Options:
    """The job's options: ``options`` (if given) with the keywords ``opts`` over it."""
    if options is not None and not isinstance(options, Options):
        raise InvalidInputError(
            f"options={options!r} is not valid: use dlutils.Options(...), such as "
            "options=Options(connections=4, timeout='30s')"
        )
    if not opts and options is not None:
        return options
    return make_options(opts, base=options)
