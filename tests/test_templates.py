"""Tests for dlutils.templates, AIStore's template test table included."""

from __future__ import annotations

import dataclasses
import itertools
import re
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlutils.errors import InvalidInputError
from dlutils.templates import (
    MAX_NAMES,
    Choice,
    Range,
    Template,
    count,
    expand,
    has_template,
    parse,
)

HINT = r"write ranges as \{start\.\.end\} or \{start\.\.end\.\.step\}, for instance"
LIST_HINT = r"write lists as \{a,b,\.\.\.\}"

# ---------------------------------------------------------------------------------------------
# Parsing: AIStore's "parse bash template without error" table, then ours.
# ---------------------------------------------------------------------------------------------

PARSED = [
    # AIStore
    (
        "prefix-{0010..0111..2}-suffix",
        "prefix-",
        (Range(10, 111, 2, 4, "-suffix"),),
    ),
    ("prefix-{0010..0111}", "prefix-", (Range(10, 111, 1, 4, ""),)),
    ("{1..2}", "", (Range(1, 2, 1, 1, ""),)),
    ("{110..220..10}", "", (Range(110, 220, 10, 3, ""),)),
    ("{1..02}", "", (Range(1, 2, 1, 1, ""),)),
    ("{1..02}}", "", (Range(1, 2, 1, 1, "}"),)),
    (
        "prefix-{0010..0111..2}-gap-{10..12}-gap2-{0040..0099..4}-suffix",
        "prefix-",
        (
            Range(10, 111, 2, 4, "-gap-"),
            Range(10, 12, 1, 2, "-gap2-"),
            Range(40, 99, 4, 4, "-suffix"),
        ),
    ),
    # ours
    ("{01..100}", "", (Range(1, 100, 1, 2, ""),)),
    ("{5..5}", "", (Range(5, 5, 1, 1, ""),)),
    ("{0..0..7}", "", (Range(0, 0, 7, 1, ""),)),
    ("a{1..2}}}", "a", (Range(1, 2, 1, 1, "}}"),)),
    ("{1..2}{3..4}", "", (Range(1, 2, 1, 1, ""), Range(3, 4, 1, 1, ""))),
    (
        "{9223372036854775806..9223372036854775807}",
        "",
        (Range(2**63 - 2, 2**63 - 1, 1, 19, ""),),
    ),
    (
        "shard-{train,val}-{000..009}.tar",
        "shard-",
        (Choice(("train", "val"), "-"), Range(0, 9, 1, 3, ".tar")),
    ),
    ("f{,.bak}", "f", (Choice(("", ".bak"), ""),)),
    ("{a..b,c}", "", (Choice(("a..b", "c"), ""),)),
    ("plain.txt", "plain.txt", ()),
]


@pytest.mark.parametrize(("template", "prefix", "ranges"), PARSED)
def test_parse_valid(template, prefix, ranges):
    parsed = parse(template)
    assert parsed == Template(template, prefix, ranges)
    assert parsed.has_ranges is bool(ranges)


# ---------------------------------------------------------------------------------------------
# Expansion: AIStore's "iter method" table, then ours.
# ---------------------------------------------------------------------------------------------

EXPANDED = [
    # AIStore
    ("prefix-{0010..0013..2}-suffix", ["prefix-0010-suffix", "prefix-0012-suffix"]),
    (
        "prefix-{0010..0013..2}-gap-{1..2}-suffix",
        [
            "prefix-0010-gap-1-suffix",
            "prefix-0010-gap-2-suffix",
            "prefix-0012-gap-1-suffix",
            "prefix-0012-gap-2-suffix",
        ],
    ),
    (
        "prefix-{0010..0013..2}-gap-{1..2..3}-suffix",
        ["prefix-0010-gap-1-suffix", "prefix-0012-gap-1-suffix"],
    ),
    # ours
    ("{1..02}}", ["1}", "2}"]),
    ("{8..11}", ["8", "9", "10", "11"]),
    ("{008..011}", ["008", "009", "010", "011"]),
    ("{98..0100}", ["98", "99", "100"]),
    ("{000..5..2}", ["0", "2", "4"]),
    ("{5..5}", ["5"]),
    ("{1..3}-{1..3..5}x", ["1-1x", "2-1x", "3-1x"]),
    ("a{0..1}b{0..1}c", ["a0b0c", "a0b1c", "a1b0c", "a1b1c"]),
    ("{train,val,test}.csv", ["train.csv", "val.csv", "test.csv"]),
    (
        "shard-{train,val}-{000..002}.tar",
        [
            "shard-train-000.tar",
            "shard-train-001.tar",
            "shard-train-002.tar",
            "shard-val-000.tar",
            "shard-val-001.tar",
            "shard-val-002.tar",
        ],
    ),
    ("{0..1}{a,b}", ["0a", "0b", "1a", "1b"]),
    ("f{,.bak}", ["f", "f.bak"]),
    ("https://host/file.txt", ["https://host/file.txt"]),
    ("a b", ["a b"]),
]


@pytest.mark.parametrize(("template", "names"), EXPANDED)
def test_expand(template, names):
    assert list(expand(template)) == names
    assert list(parse(template)) == names
    assert count(template) == len(parse(template)) == parse(template).count == len(names)


# AIStore's "at" and "fmt" syntaxes are not ours: '@' and '%' appear in ordinary links, so
# those templates (from AIStore's tables, valid and invalid alike) are plain text here.
AISTORE_OTHER_SYNTAX = [
    "%d",
    "prefix-%d",
    "prefix-%d-suffix",
    "prefix-%00d-suffix",
    "prefix-%06d-suffix",
    "prefix-%0152d-suffix",
    "prefix-06d-suffix",
    "prefix-%06-suffix",
    "prefix-d%06-suffix",
    "prefix-%0-6d-suffix",
    "prefix-%0d-suffix",
    "prefix-%6d-suffix",
    "prefix-%06d-%",
    "prefix-%%06d-suffix",
    "prefix-%06d-%06d",
    "prefix-@010-suffix",
    "pref@9",
    "@0010",
    "pref@9-gap-@0100-suffix",
    "prefix-01-suffix",
    "prefix-@-0001-suffix",
    "prefix-@@0010-suffix",
    "prefix-@d@0010-suffix",
    "https://user@host/a%20b.txt",
]


@pytest.mark.parametrize("template", AISTORE_OTHER_SYNTAX)
def test_other_aistore_syntaxes_are_plain_text(template):
    parsed = parse(template)
    assert not parsed.has_ranges
    assert parsed.prefix == template
    assert list(expand(template)) == [template]
    assert count(template) == 1
    assert not has_template(template)


# ---------------------------------------------------------------------------------------------
# Errors: AIStore's "parse bash template with error" table, then ours.
# ---------------------------------------------------------------------------------------------

INVALID = [
    # AIStore
    ("prefix-0010..0111..2}-suffix", r"the '\}' at position 20 has no '\{' before it"),
    ("prefix-{001..009-suffix", r"the '\{' at position 7 is never closed"),
    ("prefix-{002..001}-suffix", "range start 002 is greater than end 001"),
    ("prefix-{-001..009}-suffix", "range start -001 is negative"),
    ("prefix-{001..009..-1}-suffix", "range step -1 is not positive"),
    ("prefix-{0010..0111..2s}-suffix", r"range step '2s' in \{0010\.\.0111\.\.2s\}"),
    ("prefix-{0010..0111s..2}-suffix", "range end '0111s' .* is not a whole number"),
    ("prefix-{0010s..0111..2}-suffix", "range start '0010s' .* is not a whole number"),
    (
        "prefix-{00..10..0111..2}-suffix",
        r"\{00\.\.10\.\.0111\.\.2\} has 4 numbers; a range has 2 or 3",
    ),
    ("prefix-{010..}-suffix", r"range end is missing in \{010\.\.\}"),
    ("prefix-{..009}-suffix", r"range start is missing in \{\.\.009\}"),
    ("prefix-{..}-suffix", "range start is missing"),
    ("prefix-{}-suffix", r"the braces \{\} are empty"),
    ("{}", r"the braces \{\} are empty"),
    ("{{}}", "braces are nested at position 1"),
    ("{{1..2}}", "braces are nested at position 1"),
    ("{1..2{3..4}}", "braces are nested at position 5"),
    # ours
    ("a-{5..1}.tgz", "range start 5 is greater than end 1"),
    ("", "it is empty"),
    ("{0..5..0}", "range step 0 is not positive"),
    ("{1..-5}", "range end -5 is negative"),
    ("{-5..-1}", "range start -5 is negative"),
    ("{+1..+3}", r"range start '\+1' .* is not a whole number"),
    ("{1 ..3}", r"range start '1 ' .* is not a whole number"),
    ("{a..z}", "range start 'a' .* is not a whole number"),
    ("{1.5..3}", r"range start '1\.5' .* is not a whole number"),
    ("{1...3}", r"range end '\.3' .* is not a whole number"),
    ("{1..3..}", "range step is missing"),
    (
        "{\u0661..\u0663}",
        "range start .* is not a whole number",
    ),  # Arabic-Indic digits: int() takes them
    ("{0..9223372036854775808}", "range end 9223372036854775808 is larger than"),
    ("a}{1..2}", r"the '\}' at position 1 has no '\{' before it"),
    ("{1..2}x}{3..4}", r"the '\}' at position 7 has no '\{' before it"),
    ("{1..2}{", r"the '\{' at position 6 is never closed"),
    ("{1..2}-{5}", r"\{5\} is neither a range nor a list"),
    ("{train}", r"\{train\} is neither a range nor a list"),
]


@pytest.mark.parametrize(("template", "reason"), INVALID)
def test_invalid(template, reason):
    example = re.escape("'shard-{0000..0099}.tar'")
    pattern = f"^template {re.escape(repr(template))} is not valid: {reason}.*; {HINT} {example}$"
    with pytest.raises(InvalidInputError, match=pattern):
        parse(template)
    with pytest.raises(InvalidInputError, match=reason):
        expand(template)
    with pytest.raises(InvalidInputError, match=reason):
        count(template)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{a,a}", "'a' appears twice in \\{a,a\\}"),
        ("{,}", "'' appears twice in \\{,\\}"),
        ("x-{train,val,train}-{1..2}", "'train' appears twice in .*"),
    ],
)
def test_invalid_list(template, reason):
    with pytest.raises(InvalidInputError, match=f"is not valid: {reason}; {LIST_HINT}"):
        parse(template)


def test_invalid_input_error_is_a_value_error():
    with pytest.raises(ValueError, match="'a-\\{5\\.\\.1\\}\\.tgz' is not valid"):
        parse("a-{5..1}.tgz")


def test_not_a_string():
    with pytest.raises(TypeError, match="template must be a str, not int"):
        parse(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The cap and laziness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{0..9999999}",
        "{0000000..9999999}",
        "{1..10000000}",
        "{0..9999}-{0..999}",
        "{a,b}-{0..4999999}",
    ],
)
def test_cap_allows_exactly_max_names(template):
    assert count(template) == MAX_NAMES == 10_000_000


@pytest.mark.parametrize(
    ("template", "total"),
    [
        ("{0..10000000}", "10,000,001"),
        ("{1..4000}-{1..4000}", "16,000,000"),
        ("{a,b,c}-{0..3333333}", "10,000,002"),
        (
            "{0..9223372036854775807}-{0..9223372036854775807}",
            "85,070,591,730,234,615,865,843,651,857,942,052,864",
        ),
    ],
)
def test_cap_raises_at_parse_time(template, total):
    # Would take forever (or all memory) if anything were expanded before the check.
    with pytest.raises(
        InvalidInputError, match=f"it expands to {total} names, more than 10,000,000"
    ):
        parse(template)
    with pytest.raises(InvalidInputError, match="split it into several templates"):
        expand(template)


def test_cap_still_reports_earlier_syntax_errors():
    with pytest.raises(InvalidInputError, match="never closed"):
        parse("{0..99999999}-{1..2")


def test_expand_is_lazy_on_a_huge_template():
    names = expand("shard-{0000000..9999999}.tar")
    assert list(itertools.islice(names, 3)) == [
        "shard-0000000.tar",
        "shard-0000001.tar",
        "shard-0000002.tar",
    ]
    assert next(names) == "shard-0000003.tar"


def test_expand_uses_constant_memory():
    tracemalloc.start()
    try:
        names = expand("{0..99}/{0..99}/{0..999}.bin")
        for _ in itertools.islice(names, 50_000):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A materialized list of 50,000 names would take several megabytes.
    assert peak < 100_000


def test_expand_parses_before_the_first_next():
    with pytest.raises(InvalidInputError):
        expand("{2..1}")  # no next() needed


def test_last_name_of_a_huge_template():
    t = parse("{0..1}-{0000000..0999999..2}")
    assert len(t) == 1_000_000
    *_, last = itertools.islice(t, len(t) - 1, None)
    assert last == "1-0999998"


def test_template_is_frozen_and_reiterable():
    t = parse("{1..3}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.prefix = "x"  # type: ignore[misc]
    assert list(t) == list(t) == ["1", "2", "3"]
    assert hash(t) == hash(parse("{1..3}"))


# ---------------------------------------------------------------------------------------------
# has_template
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://host/shard-{000..127}.tar", True),
        ("s3://bucket/{train,val}.csv", True),
        ("{1..2}", True),
        ("{0..10..2}", True),
        ("x-{1..3}-{5..1}", True),  # one good range: parse() will explain the other
        ("{{1..2}}", True),
        ("{0..99999999999}", True),  # well-formed, too large: parse() says so
        ("{a,}", True),
        ("https://host/file.tar", False),
        ("", False),
        ("a-{5..1}.tgz", False),
        ("{}", False),
        ("{x}", False),
        ("{1-9}", False),
        ("{a,a}", False),
        ("{1..", False),
        ("}{", False),
        ("{-1..3}", False),
        ("prefix-%06d", False),
        ("pref@9", False),
        (None, False),
        (b"{1..2}", False),
    ],
)
def test_has_template(text, expected):
    assert has_template(text) is expected


@given(st.text(alphabet="{}.,0123456789-ab", max_size=30))
def test_has_template_never_raises_and_agrees_with_parse(text):
    result = has_template(text)
    try:
        parsed = parse(text)
    except InvalidInputError:
        return
    assert result is parsed.has_ranges


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

ranges = st.tuples(
    st.integers(0, 30),  # start
    st.integers(0, 12),  # span
    st.integers(1, 5),  # step
    st.integers(1, 3),  # start padding
    st.integers(1, 3),  # end padding
)


@given(st.lists(ranges, min_size=1, max_size=3), st.sampled_from(["-", "/", "_x_"]))
def test_count_matches_enumeration(specs, sep):
    pieces = []
    for start, span, step, pad_start, pad_end in specs:
        pieces.append(f"{{{start:0{pad_start}d}..{start + span:0{pad_end}d}..{step}}}")
    template = "p" + sep + sep.join(pieces) + sep + "s"
    names = list(expand(template))
    assert len(names) == count(template) == len(parse(template))
    assert len(set(names)) == len(names)
    head, tail = len("p" + sep), len(sep + "s")
    assert names == sorted(names, key=lambda n: [int(x) for x in n[head:-tail].split(sep)])
    for (start, span, step, _, _), part in zip(specs, parse(template).ranges, strict=True):
        assert isinstance(part, Range)
        assert (part.start, part.end, part.step) == (start, start + span, step)


@given(
    st.lists(
        st.lists(
            st.text(alphabet="abc.", min_size=1, max_size=3), min_size=2, max_size=4, unique=True
        ),
        min_size=1,
        max_size=3,
    )
)
def test_lists_expand_to_the_product(lists):
    template = "/".join("{" + ",".join(options) + "}" for options in lists)
    assert list(expand(template)) == ["/".join(combo) for combo in itertools.product(*lists)]
    assert count(template) == len(list(itertools.product(*lists)))
