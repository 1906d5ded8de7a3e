"""Hypothesis fuzzing of what strangers write: templates, JSON requests, names.

Whatever the input: only a ``ValueError`` (``dlutils.InvalidInputError``,
``UnsafePathError``) escapes, never another exception; nothing hangs (every example has
a deadline); and every path that comes out lies inside the destination. No test here
starts a job or touches the network.
"""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dlutils import Job, templates
from dlutils.names import (
    check_name,
    join_inside,
    name_from_content_disposition,
    name_from_url,
    object_name,
)

FUZZ = settings(
    max_examples=150,
    deadline=2000,  # ms per example: a hang fails, a slow machine does not
    derandomize=True,  # the same examples on every run: CI is deterministic
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

#: Characters that matter to the parsers, plus some that should not.
PATHY = "./\\~:%{}, \x00-_azAZ09é"
pathy_text = (
    st.text(alphabet=PATHY, max_size=40)
    | st.text(max_size=30)
    | st.builds(lambda t: "sub/" + t, st.text(alphabet=PATHY, max_size=10))  # a planted link
)


@pytest.fixture(scope="module")
def dest(tmp_path_factory) -> str:
    """An existing destination holding ``sub``, a symbolic link to a folder outside it."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "dest").mkdir()
    (root / "outside").mkdir()
    os.symlink(root / "outside", root / "dest" / "sub")
    return str(root / "dest")


def inside(dest: str, path: str) -> bool:
    """Whether ``path`` lies in ``dest`` once every existing link on the way is followed."""
    dest = os.path.realpath(dest)
    return os.path.commonpath([dest, os.path.realpath(path)]) == dest


# --------------------------------------------------------------------------- templates

number = st.integers(min_value=0, max_value=10**6).map(str) | st.sampled_from(
    ["", "-1", "007", "1e3", "0x10", "1" * 30, " 1", "٣"]
)
range_body = st.builds(
    lambda a, b, c: f"{a}..{b}" + (f"..{c}" if c is not None else ""),
    number,
    number,
    st.none() | number,
)
group = range_body | st.lists(st.text(alphabet="ab,.{}", max_size=4), max_size=4).map(",".join)
structured = st.lists(
    st.tuples(st.text(alphabet="ab/._-{}", max_size=4), group), min_size=1, max_size=3
).map(lambda parts: "".join(f"{lit}{{{g}}}" for lit, g in parts))
template_text = structured | st.text(alphabet="{}.,0123456789ab/-", max_size=30)


@FUZZ
@given(template_text)
@example("x-{0..99999999999999999999}")  # far past the cap: refused without expanding
@example("x-{" + "9" * 5000 + "..1}")  # more digits than int() takes by default
def test_templates_parse_expand_count(text):
    try:
        parsed = templates.parse(text)
    except ValueError:
        with pytest.raises(ValueError):
            templates.count(text)
        return
    assert templates.count(text) == parsed.count == len(parsed)
    if parsed.count <= 2000:
        names = list(templates.expand(text))
        assert len(names) == parsed.count
        assert all(isinstance(n, str) for n in names)


@FUZZ
@given(template_text)
def test_range_jobs_put_every_name_inside(dest, text):
    try:
        job = Job.range("http://127.0.0.1:1/d/" + text, dest)
    except ValueError:
        return
    if templates.count("http://127.0.0.1:1/d/" + text) <= 2000:
        assert all(inside(dest, p) for p in job.paths)


# --------------------------------------------------------------------------- JSON requests

scalar = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | pathy_text
links = st.sampled_from(
    [
        "http://127.0.0.1:1/a.bin",
        "http://127.0.0.1:1/d/..%2Fx",
        "http://127.0.0.1:1/",
        "http://127.0.0.1:1/d/f{0..3}.bin",
        "ftp://127.0.0.1/a",
        "s3://bucket/key",
        "http://[::1",
        "",
    ]
) | st.builds(lambda t: "http://127.0.0.1:1/d/" + t, pathy_text)
anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
fields = {
    "type": st.sampled_from(["single", "multi", "range", "backend", "other", ""]) | scalar,
    "link": links | scalar,
    "object_name": pathy_text | scalar,
    "objects": st.lists(links | scalar, max_size=4)
    | st.dictionaries(pathy_text, links | scalar, max_size=4)
    | scalar,
    "template": st.builds(lambda t: "http://127.0.0.1:1/d/" + t, template_text) | scalar,
    "subdir": pathy_text | scalar,
    "description": scalar,
    "timeout": st.sampled_from(["1m30s", "500ms", "-1s", "1h1h", "nan", "inf", ""]) | scalar,
    "limits": st.fixed_dictionaries({}, optional={"connections": scalar, "bytes_per_hour": scalar})
    | scalar,
    "headers": st.dictionaries(pathy_text, scalar | st.lists(pathy_text, max_size=2), max_size=3)
    | scalar,
    "bucket": st.sampled_from(["ais://127.0.0.1:1/b/", "gs://", "s3://b/../x/"])
    | st.fixed_dictionaries({}, optional={"name": scalar, "provider": scalar})
    | scalar,
    "prefix": scalar,
    "suffix": scalar,
    "synchronize": scalar,
}
request_body = st.fixed_dictionaries({}, optional=fields) | anything


@FUZZ
@given(request_body)
@example({"type": "single", "link": "http://127.0.0.1:1/a.bin", "timeout": [1]})
@example({"type": "multi", "objects": {"../x": "http://127.0.0.1:1/a.bin"}})
@example({"type": "range", "template": "http://127.0.0.1:1/d/{0..1}", "subdir": "../up"})
@example({"type": "single", "link": "http://127.0.0.1:1/a.bin", "headers": {"a": None}})
def test_json_requests(dest, body):
    try:
        job = Job.from_request(body, dest)
    except ValueError:
        return
    if body.get("type") in ("single", "multi") or (
        body.get("type") == "range" and templates.count(body["template"]) <= 2000
    ):
        assert all(inside(dest, p) for p in job.paths)


# --------------------------------------------------------------------------- names

url_text = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}/{path}" + (f"?{query}" if query else ""),
    st.sampled_from(["http", "https", "s3", "gs", "ais", "HTTP"]),
    st.sampled_from(["h", "127.0.0.1:1", "u:p@h", "[::1]", "h:99999999"]),
    pathy_text,
    st.none() | st.text(alphabet="=&./\\%a~", max_size=20),
) | st.text(max_size=40)


@FUZZ
@given(url_text)
@example("http://h/d/..%2F..%2Fx")
@example("http://h/service?file=..\\..\\x.pdf")
@example("http://h/d/%2Fetc%2Fx")
def test_names_from_links_stay_inside(dest, link):
    for derive in (name_from_url, object_name):
        try:
            name = derive(link)
        except ValueError:
            continue
        assert isinstance(name, str)
        try:
            path = join_inside(dest, name)
        except ValueError:
            continue
        assert inside(dest, path), (link, name, path)


@FUZZ
@given(pathy_text)
@example("a/../../x")
@example("a\\..\\..\\x")
@example("C:x")
@example("x" * 300)  # longer than a file name may be
@example("sub/x")
def test_check_name_and_join_inside(dest, name):
    try:
        clean = check_name(name)
    except ValueError:
        with pytest.raises(ValueError):
            join_inside(dest, name)
        return
    # check_name is lexical: the joined path is inside before any link is followed
    joined = os.path.abspath(os.path.join(dest, *clean.split("/")))
    assert os.path.commonpath([dest, joined]) == dest
    try:
        path = join_inside(dest, name)
    except ValueError:  # e.g. through the planted link
        return
    assert inside(dest, path)


header_value = st.builds(
    lambda kind, key, value: f"{kind}; {key}={value}",
    st.sampled_from(["attachment", "inline", "", "form-data"]),
    st.sampled_from(["filename", "filename*", "FILENAME", "name"]),
    st.builds(lambda t: f'"{t}"', pathy_text)
    | st.builds(lambda t: f"UTF-8''{t}", st.text(alphabet=string.printable, max_size=30))
    | pathy_text,
) | st.text(max_size=60)


@FUZZ
@given(header_value)
@example("attachment; filename*=UTF-8''..%2F..%2Fx")
@example("attachment; filename*=UTF-8''%00")
@example("attachment; filename*=bogus''x")
@example("attachment; filename=\"a\"; filename*=UTF-8''%E9%ZZ")
def test_content_disposition_names_stay_inside(dest, value):
    try:
        name = name_from_content_disposition(value)
    except ValueError:
        return
    assert name is None or isinstance(name, str)
    if name:
        try:
            path = join_inside(dest, name)
        except ValueError:
            return
        assert inside(dest, path), (value, name, path)
