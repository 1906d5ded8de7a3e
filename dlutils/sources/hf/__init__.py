"""HuggingFace source: ``hf://`` datasets and models read through the Hub's HTTP API.

:mod:`.links` parses links (and finds the endpoint and token), :mod:`.hub` sends
requests to the Hub, :mod:`.listing` lists a repository or its parquet export, and
:mod:`.download` holds :func:`hf_download` and :func:`fetch_hf`.
"""

# What this module relies on, from huggingface_hub and the Hub (re-implemented, not copied):
#
# * Links follow huggingface_hub's HfFileSystem (hf_file_system.py ``resolve_path``):
#   ``[datasets/|models/]<id>[@<revision>][/<path in repo>]``. The revision is
#   percent-decoded; ``refs/convert/<word>`` and ``refs/pr/<n>`` may be written as they
#   are, any other revision with a ``/`` is written encoded (``refs%2Fpr%2F1`` works too).
# * Files: ``{endpoint}/{datasets/}<id>/resolve/<quote(revision, safe="")>/<quote(path)>``
#   (file_download.py ``hf_hub_url``). A HEAD there (``get_hf_file_metadata``) answers a
#   Git file with 200, its ``ETag`` (the git blob id) and ``Content-Length``, and an LFS
#   file with a redirect to the storage host carrying ``X-Linked-Size`` and
#   ``X-Linked-Etag`` (``"<sha256>"``); a GET is redirected the same way. Redirects within
#   the hub (a renamed repository) keep the credentials, as huggingface_hub's "follow
#   relative redirects" does; the storage host's signed link needs none and gets none.
# * Listing: ``GET {endpoint}/api/{datasets|models}/<id>/tree/<revision>[/<folder>]``
#   ``?recursive=true&expand=false`` (hf_api.py ``list_repo_tree``), pages chained by a
#   ``Link: <...>; rel="next"`` header (utils/_pagination.py). Entries: ``type``
#   (``file``/``directory``), ``path``, ``size``, ``oid`` (git blob id) and, for LFS
#   files, ``lfs: {oid: <sha256>, size}``.
# * The parquet export (dataset-viewer docs/source/parquet.md): ``GET {endpoint}/api/
#   datasets/<id>/parquet`` answers ``{config: {split: [url, ...]}}``; the files live on
#   the branch ``refs/convert/parquet`` as ``<config>/<split>/NNNN.parquet`` (a partial
#   conversion as ``<config>/partial-<split>/``). AIStore's downloader (cmd/cli/cli/
#   hf_utils.go, docs/cli/download.md) fetches those urls by their base name, so
#   ``train/0.parquet`` and ``validation/0.parquet`` collide there, and it ignores the
#   revision. Here the export's configs and splits are listed, and the branch's tree gives
#   each file with its folders, its size and its sha256: names never collide.
# * Auth: ``token=``, else ``HF_TOKEN``, else ``HUGGING_FACE_HUB_TOKEN`` (utils/_auth.py,
#   cleaned of whitespace), as ``Authorization: Bearer``; ``HF_ENDPOINT`` names the hub
#   (constants.py). The token file of ``huggingface-cli login`` is not read. The hub
#   answers 401 to an anonymous request for a private or gated repository (and for one
#   that does not exist), 403 to a token without access to a gated one; ``X-Error-Code``
#   (``GatedRepo``, ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) says which.

from __future__ import annotations

from .download import fetch_hf, hf_download
from .hub import stat_hf
from .links import (
    DEFAULT_ENDPOINT,
    PARQUET_REVISION,
    HfAuthError,
    HfRef,
    hf_endpoint,
    hf_token,
    parse_hf,
    resolve_url,
)
from .listing import list_hf

__all__ = [
    "HfRef",
    "HfAuthError",
    "parse_hf",
    "hf_endpoint",
    "hf_token",
    "resolve_url",
    "stat_hf",
    "list_hf",
    "fetch_hf",
    "hf_download",
    "DEFAULT_ENDPOINT",
    "PARQUET_REVISION",
]
