"""Name templates such as ``shard-{0000..0099}.tar``: parse, count and lazily expand them."""

# Behaviour follows the AIStore downloader (NVIDIA/aistore, cmn/cos/template.go,
# ParseBashTemplate), which this module re-implements rather than copies. Differences:
#
# * Only the brace syntax. AIStore's other syntaxes, ``@0100`` and ``%06d``, are plain text
#   here: ``@`` and ``%`` occur in ordinary links (``user@host``, ``%20``).
# * Bash comma lists ``{train,val,test}`` are accepted (our extension).
# * A string with no brace at all is a valid template without ranges that expands to itself
#   and counts 1. AIStore's ParseBashTemplate (what its downloader calls) rejects such a
#   string; its NewParsedTemplate accepts it as "prefix only" but then iterates over nothing
#   while Count() says 1. The empty string stays an error, as in AIStore.
# * Bounds are ASCII digits only; Go's ParseInt would also take a leading ``+``.
# * The 10,000,000-name cap is checked when parsing; AIStore checks it in Expand().

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import InvalidInputError
from .names import redact

__all__ = ["MAX_NAMES", "Range", "Choice", "Template", "parse", "expand", "count", "has_template"]

#: Most names one template may expand to (AIStore's ``maxTemplateExpansion``).
MAX_NAMES = 10_000_000

_INT64_MAX = 2**63 - 1  # AIStore parses bounds as int64
_DIGITS = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")
_GROUP = re.compile(r"\{([^{}]*)\}")

_RANGE_HINT = (
    "write ranges as {start..end} or {start..end..step}, for instance 'shard-{0000..0099}.tar'"
)
_LIST_HINT = (
    "write lists as {a,b,...} with two or more different items, "
    "for instance 'shard-{train,val}-{0000..0099}.tar'"
)
_CAP_HINT = (
    "split it into several templates, "
    "for instance 'shard-{0000000..4999999}.tar' and 'shard-{5000000..9999999}.tar'"
)


@dataclass(frozen=True)
class Range:
    """A numeric range ``{start..end..step}`` and the literal text that follows it.

    ``width`` is the zero-padding width: numbers are written with at least that many digits.
    """

    start: int
    end: int
    step: int
    width: int
    gap: str = ""

    @property
    def size(self) -> int:
        """How many numbers the range holds."""
        return (self.end - self.start) // self.step + 1

    def __len__(self) -> int:
        return self.size

    def values(self) -> Iterator[str]:
        """Yield the formatted numbers, lazily."""
        width = self.width
        for n in range(self.start, self.end + 1, self.step):
            yield f"{n:0{width}d}"


@dataclass(frozen=True)
class Choice:
    """A comma list ``{train,val,test}`` and the literal text that follows it."""

    options: tuple[str, ...]
    gap: str = ""

    @property
    def size(self) -> int:
        """How many alternatives the list holds."""
        return len(self.options)

    def __len__(self) -> int:
        return self.size

    def values(self) -> Iterator[str]:
        """Yield the alternatives in the order written."""
        return iter(self.options)


@dataclass(frozen=True)
class Template:
    """A parsed template: literal ``prefix``, then each part of ``ranges`` with its ``gap``.

    Build one with :func:`parse`. Iterating yields the names lazily, the last range varying
    fastest; ``len()`` and :attr:`count` give how many there are without expanding.
    """

    text: str
    prefix: str
    ranges: tuple[Range | Choice, ...] = ()

    @property
    def has_ranges(self) -> bool:
        """Whether the template has at least one range or list (else it names only itself)."""
        return bool(self.ranges)

    @property
    def count(self) -> int:
        """How many names the template expands to."""
        return math.prod(part.size for part in self.ranges)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        return _names(self.prefix, self.ranges)


def _names(head: str, parts: tuple[Range | Choice, ...]) -> Iterator[str]:
    # One generator per part on the stack at a time: memory does not grow with the count.
    if not parts:
        yield head
        return
    first, rest = parts[0], parts[1:]
    for value in first.values():
        yield from _names(head + value + first.gap, rest)


def _invalid(template: str, reason: str, hint: str = _RANGE_HINT) -> InvalidInputError:
    # redacted: a template is a link, which may carry a password or a signed query
    return InvalidInputError(f"template {redact(template)!r} is not valid: {reason}; {hint}")


def _parse_number(template: str, body: str, name: str, raw: str) -> int:
    if raw == "":
        raise _invalid(template, f"range {name} is missing in {{{body}}}")
    if _NEGATIVE.fullmatch(raw):
        if name == "step":
            raise _invalid(template, f"range step {raw} is not positive")
        raise _invalid(template, f"range {name} {raw} is negative")
    if not _DIGITS.fullmatch(raw):
        raise _invalid(template, f"range {name} {raw!r} in {{{body}}} is not a whole number")
    value = int(raw)
    if value > _INT64_MAX:
        raise _invalid(template, f"range {name} {raw} is larger than {_INT64_MAX}")
    return value


def _parse_group(template: str, body: str, gap: str) -> Range | Choice:
    """Parse the text between one pair of braces."""
    if body == "":
        raise _invalid(template, "the braces {} are empty")
    if "," in body:
        options = tuple(body.split(","))
        seen: set[str] = set()
        for option in options:
            if option in seen:
                raise _invalid(template, f"{option!r} appears twice in {{{body}}}", _LIST_HINT)
            seen.add(option)
        return Choice(options, gap)
    if ".." not in body:
        # Bash would keep "{a}" as literal text; a lone item is more often a typo ("{1-9}"),
        # and AIStore rejects it too.
        raise _invalid(
            template,
            f"{{{body}}} is neither a range nor a list (leave out the braces for literal text)",
        )
    fields = body.split("..")
    if len(fields) > 3:
        raise _invalid(template, f"{{{body}}} has {len(fields)} numbers; a range has 2 or 3")
    start = _parse_number(template, body, "start", fields[0])
    end = _parse_number(template, body, "end", fields[1])
    step = _parse_number(template, body, "step", fields[2]) if len(fields) == 3 else 1
    if start > end:
        raise _invalid(template, f"range start {fields[0]} is greater than end {fields[1]}")
    if step <= 0:
        raise _invalid(template, f"range step {fields[2]} is not positive")
    # Padding as AIStore computes it: the shorter of the two bounds as written, so {1..02}
    # gives 1, 2 and {01..100} gives 01 ... 99, 100. (Bash would pad both to the longer
    # bound, 001 ... 100, whenever either bound has a leading zero.)
    width = min(len(fields[0]), len(fields[1]))
    return Range(start, end, step, width, gap)


def parse(template: str) -> Template:
    """Parse a template into its literal text and ranges, without expanding it.

    Parameters
    ----------
    template : str
        Text with any number of ``{start..end}`` or ``{start..end..step}`` ranges and
        ``{a,b,...}`` lists. Numbers are zero-padded to the shorter bound as written
        (``{001..100}`` gives ``001``); start, end and step are non-negative integers with
        ``start <= end`` and ``step >= 1``. Text between and after ranges is kept as is, and a
        ``}`` after the last range is literal. Text with no braces names only itself.

    Returns
    -------
    Template

    Raises
    ------
    dlutils.InvalidInputError
        (a ``ValueError``) when the template is empty, a brace is unbalanced or nested, a
        range or list is malformed, or it would expand to more than :data:`MAX_NAMES` names.
        The message quotes the template and shows a correct one.

    Examples
    --------
    >>> from dlutils.templates import parse
    >>> t = parse("shard-{0000..0099..10}.tar")
    >>> t.prefix, t.ranges[0]
    ('shard-', Range(start=0, end=99, step=10, width=4, gap='.tar'))
    >>> len(t), list(t)[:2]
    (10, ['shard-0000.tar', 'shard-0010.tar'])
    >>> parse("data/{train,val}-{1..2}.csv").count
    4
    >>> parse("readme.txt").has_ranges
    False
    >>> parse("a-{5..1}.tgz")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: template 'a-{5..1}.tgz' is not valid: range start 5 is \
greater than end 1; write ranges as {start..end} or {start..end..step}, for instance \
'shard-{0000..0099}.tar'
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, not {type(template).__name__}")
    if template == "":
        raise _invalid(template, "it is empty")
    left = template.find("{")
    stray = template.find("}", 0, None if left == -1 else left)
    if stray != -1:
        raise _invalid(template, f"the '}}' at position {stray} has no '{{' before it")
    if left == -1:
        return Template(template, template)

    prefix = template[:left]
    parts: list[Range | Choice] = []
    while left != -1:
        right = template.find("}", left + 1)
        if right == -1:
            raise _invalid(template, f"the '{{' at position {left} is never closed")
        body = template[left + 1 : right]
        inner = body.find("{")
        if inner != -1:
            raise _invalid(template, f"braces are nested at position {left + 1 + inner}")
        following = template.find("{", right + 1)
        gap = template[right + 1 :] if following == -1 else template[right + 1 : following]
        # As in AIStore, a stray '}' is literal only after the last range.
        if following != -1 and "}" in gap:
            stray = right + 1 + gap.index("}")
            raise _invalid(template, f"the '}}' at position {stray} has no '{{' before it")
        parts.append(_parse_group(template, body, gap))
        left = following

    result = Template(template, prefix, tuple(parts))
    total = result.count
    if total > MAX_NAMES:
        raise _invalid(
            template, f"it expands to {total:,} names, more than {MAX_NAMES:,}", _CAP_HINT
        )
    return result


def expand(template: str) -> Iterator[str]:
    """Yield every name a template stands for, lazily, the last range varying fastest.

    The template is parsed (and checked) at once; names are then made one at a time, so
    memory stays constant however many there are.

    Parameters
    ----------
    template : str
        See :func:`parse`.

    Returns
    -------
    Iterator[str]

    Raises
    ------
    dlutils.InvalidInputError
        When the template is malformed or too large, see :func:`parse`.

    Examples
    --------
    >>> from dlutils.templates import expand
    >>> list(expand("x-{0..1}-{08..10}"))
    ['x-0-08', 'x-0-09', 'x-0-10', 'x-1-08', 'x-1-09', 'x-1-10']
    >>> list(expand("{train,val}/part-{1..5..2}.parquet"))
    ['train/part-1.parquet', 'train/part-3.parquet', 'train/part-5.parquet', \
'val/part-1.parquet', 'val/part-3.parquet', 'val/part-5.parquet']
    >>> list(expand("https://example.org/file.txt"))
    ['https://example.org/file.txt']
    """
    return iter(parse(template))


def count(template: str) -> int:
    """Return how many names a template expands to, without expanding it.

    Parameters
    ----------
    template : str
        See :func:`parse`.

    Returns
    -------
    int
        At most :data:`MAX_NAMES`; 1 for text without ranges.

    Raises
    ------
    dlutils.InvalidInputError
        When the template is malformed or too large, see :func:`parse`.

    Examples
    --------
    >>> from dlutils.templates import count
    >>> count("shard-{0000..9999}.tar")
    10000
    >>> count("prefix-{0010..0111..2}-gap-{10..12}-gap2-{0040..0099..4}-suffix")
    2295
    """
    return parse(template).count


def has_template(text: str) -> bool:
    """Tell whether text contains at least one well-formed range or comma list.

    Use it to decide whether a link is a template. It never raises: a string that holds a
    well-formed range but is otherwise malformed gives True, and :func:`parse` then explains
    what is wrong.

    Parameters
    ----------
    text : str

    Returns
    -------
    bool

    Examples
    --------
    >>> from dlutils.templates import has_template
    >>> has_template("https://host/shard-{000..127}.tar"), has_template("s3://b/{train,val}.csv")
    (True, True)
    >>> has_template("https://host/file.tar"), has_template("a-{5..1}"), has_template("{x}")
    (False, False, False)
    """
    if not isinstance(text, str):
        return False
    for match in _GROUP.finditer(text):
        try:
            _parse_group(text, match.group(1), "")
        except InvalidInputError:
            continue
        return True
    return False
