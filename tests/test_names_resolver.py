"""The resolver, table-driven: semver precedence (the ``semver`` crate), every operator of
our spec grammar, partial versions, wildcards, prereleases (only when a bound names one or
``pre`` is asked), yanks (PEP 592: skipped by ranges, chosen by an exact pin), and the
errors of malformed versions and specs."""

from __future__ import annotations

import pytest
from snapdir._errors import InvalidArgumentError
from snapdir._snapdir import spec_check, spec_matches, spec_resolve, version_order
from snapdir.names.grammar import check_spec, check_version

VERSIONS = [
    "0.0.1",
    "0.0.2",
    "0.1.0",
    "0.1.5",
    "0.2.0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-beta",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.2.0",
    "1.2.3",
    "1.2.10",
    "1.3.0-rc.1",
    "1.3.0",
    "1.9.9",
    "2.0.0-rc.1",
    "2.0.0-rc.2",
    "2.0.0",
    "2.1.0",
    "10.0.0",
]

# (spec, pre, expected highest match or None)
RESOLVE: list[tuple[str, bool, str | None]] = [
    ("*", False, "10.0.0"),
    ("*", True, "10.0.0"),
    ("1.2.3", False, "1.2.3"),
    ("v1.2.3", False, "1.2.3"),
    ("==1.2.3", False, "1.2.3"),
    ("== 1.2.3", False, "1.2.3"),
    ("==1.2", False, "1.2.10"),
    ("==1.2.*", False, "1.2.10"),
    ("1.2.*", False, "1.2.10"),
    ("1.*", False, "1.9.9"),
    ("1", False, "1.9.9"),
    ("1.2", False, "1.2.10"),
    ("==1", False, "1.9.9"),
    ("==4.0.0", False, None),
    ("==1.3.0-rc.1", False, "1.3.0-rc.1"),
    ("==2.0.0-rc.2", False, "2.0.0-rc.2"),
    ("!=10.0.0", False, "2.1.0"),
    ("!=10.*", False, "2.1.0"),
    ("!=10", False, "2.1.0"),
    ("!=2.*,!=10.*", False, "1.9.9"),
    ("!=1.9.9,<2", False, "1.3.0"),
    (">=1.2", False, "10.0.0"),
    (">=1.2,<2", False, "1.9.9"),
    (">=1.2, <2", False, "1.9.9"),
    (" >=1.2 , <2 ", False, "1.9.9"),
    (">=1.2,<2", True, "1.9.9"),
    (">=1.2,<2.0.0", False, "1.9.9"),
    (">=1.2,<1.3", False, "1.2.10"),
    (">=1.2,<1.3", True, "1.2.10"),
    (">=1.2,<=1.3", False, "1.3.0"),
    (">=1.2,<=1.3.0", False, "1.3.0"),
    (">=1.2,<1.3.0", True, "1.2.10"),
    (">1.2", False, "10.0.0"),
    (">1.2,<2", False, "1.9.9"),
    (">1.2,<1.9", False, "1.3.0"),
    (">1.2.3,<1.3", False, "1.2.10"),
    (">1.2.10,<1.3", False, None),
    (">1.2.10,<1.3.1", False, "1.3.0"),
    (">1.2.10,<1.3.1", True, "1.3.0"),
    (">1.2.10,<1.3.0", True, None),  # PEP 440: <V never admits V's own prereleases
    (">1.2.10,<1.3.0", False, None),
    (">=1.3.0-rc.1,<1.3.0", False, "1.3.0-rc.1"),
    (">=1.3.0-rc.1", False, "10.0.0"),
    (">=2.0.0-rc.1,<2.0.0", False, "2.0.0-rc.2"),
    (">=2.0.0-rc.1,<=2.0.0", False, "2.0.0"),
    ("<1", False, "0.2.0"),
    ("<1", True, "0.2.0"),
    ("<1.0.0", True, "0.2.0"),
    ("<1.0.0-beta", True, "1.0.0-alpha.1"),
    ("<1.0.0-beta", False, "1.0.0-alpha.1"),
    ("<=1", False, "1.9.9"),
    ("<=1.2", False, "1.2.10"),
    ("<=1.2.3", False, "1.2.3"),
    ("<=0.0.1", False, "0.0.1"),
    ("<0.0.1", False, None),
    ("<2", True, "1.9.9"),
    ("<2.0.0", True, "1.9.9"),
    ("<2.0.1", True, "2.0.0"),
    ("<2.1.0", True, "2.0.0"),
    ("^1", False, "1.9.9"),
    ("^1.2", False, "1.9.9"),
    ("^1.2.3", False, "1.9.9"),
    ("^1.2.3", True, "1.9.9"),
    ("^1.9.9", False, "1.9.9"),
    ("^1.10", False, None),
    ("^2", False, "2.1.0"),
    ("^2", True, "2.1.0"),
    ("^2.0.0-rc.1", False, "2.1.0"),
    ("^0", False, "0.2.0"),
    ("^0.1", False, "0.1.5"),
    ("^0.1.2", False, "0.1.5"),
    ("^0.1.6", False, None),
    ("^0.0", False, "0.0.2"),
    ("^0.0.1", False, "0.0.1"),
    ("^0.0.2", False, "0.0.2"),
    ("^0.2", False, "0.2.0"),
    ("^10", False, "10.0.0"),
    ("~1", False, "1.9.9"),
    ("~1.2", False, "1.2.10"),
    ("~1.2.3", False, "1.2.10"),
    ("~1.2.11", False, None),
    ("~1.3", False, "1.3.0"),
    ("~1.3", True, "1.3.0"),
    ("~0.1", False, "0.1.5"),
    ("~0", False, "0.2.0"),
    ("~2.0.0-rc.1", False, "2.0.0"),
    ("~=1.2", False, "1.9.9"),
    ("~=1.2.3", False, "1.2.10"),
    ("~=1.2.0", False, "1.2.10"),
    ("~=1.3", False, "1.9.9"),
    ("~=0.1", False, "0.2.0"),
    ("~=0.1.1", False, "0.1.5"),
    ("~=2.0", False, "2.1.0"),
    ("~=2.0.0", False, "2.0.0"),
    ("~=2.0.0-rc.1", False, "2.0.0"),
    ("~=10.0", False, "10.0.0"),
    ("~=9.0", False, None),
    (">=2", False, "10.0.0"),
    (">=2,<10", False, "2.1.0"),
    (">=2,<3", False, "2.1.0"),
    (">=2,<2.1", False, "2.0.0"),
    (">=2,<2.0.1", True, "2.0.0"),
    (">=2.0.0-rc.1,<2.0.0-rc.2", False, "2.0.0-rc.1"),
    (">=1.0.0-alpha,<1.0.0", False, "1.0.0-beta"),
    (">=1.0.0-alpha.1,<1.0.0-beta", False, "1.0.0-alpha.1"),
    ("==1.0.0-alpha", False, "1.0.0-alpha"),
    ("<1.0.0,>=0.2", False, "0.2.0"),
    ("<1.0.0,>=0.2", True, "0.2.0"),
    (">=0.1,<0.2", False, "0.1.5"),
    (">0.1,<0.2", False, None),
    (">0.1.0,<0.2", False, "0.1.5"),
    (">=0,<0.1", False, "0.0.2"),
    ("0.*", False, "0.2.0"),
    ("0.1.*", False, "0.1.5"),
    ("0.0.*", False, "0.0.2"),
    ("2.*", False, "2.1.0"),
    ("2.*", True, "2.1.0"),
    ("2.0.*", False, "2.0.0"),
    ("2.0.*", True, "2.0.0"),
    ("3.*", False, None),
    ("1.3.*", False, "1.3.0"),
    ("1.3.*", True, "1.3.0"),
    (">=1,!=1.9.9,<2", False, "1.3.0"),
    (">=1,!=1.3.*,!=1.9.*,<2", False, "1.2.10"),
    (">1,<1.0.1", False, None),
    (">=1,<1.0.1", False, "1.0.0"),
    ("^1,!=1.9.9", False, "1.3.0"),
    ("~=1.2,!=1.9.9,!=1.3.0", False, "1.2.10"),
    (">=11", False, None),
    ("<0.0.0", False, None),
    (">=10.0.0", False, "10.0.0"),
    (">10", False, None),
    (">9", False, "10.0.0"),
    ("<=10", False, "10.0.0"),
    ("<10", False, "2.1.0"),
    ("<10", True, "2.1.0"),
]

# (spec, version, pre, matches)
MATCH: list[tuple[str, str, bool, bool]] = [
    ("1.2.3", "1.2.3", False, True),
    ("1.2.3", "1.2.4", False, False),
    ("==1.2.3-rc.1", "1.2.3-rc.1", False, True),
    ("==1.2.3-rc.1", "1.2.3-rc.2", False, False),
    ("==1.2.3-rc.1", "1.2.3", False, False),
    ("1.2.*", "1.2.0-rc.1", False, False),
    ("1.2.*", "1.2.0-rc.1", True, True),
    ("1.2.*", "1.3.0-alpha", True, False),
    (">=1.2", "1.2.0", False, True),
    (">=1.2", "1.2.0-rc.1", True, False),
    (">=1.2", "1.3.0-rc.1", False, False),
    (">=1.2", "1.3.0-rc.1", True, True),
    (">=1.2.0-rc.1", "1.2.0-rc.1", False, True),
    (">=1.2.0-rc.1", "1.2.0-rc.2", False, True),
    (">=1.2.0-rc.1", "1.2.1-rc.1", False, False),
    (">=1.2.0-rc.1", "1.2.1-rc.1", True, True),
    ("<2", "2.0.0-alpha", True, False),
    ("<2.0.0", "2.0.0-alpha", True, False),
    ("<2.0.0-beta", "2.0.0-alpha", False, True),
    ("<2.0.0-beta", "2.0.0-beta", False, False),
    ("<=2.0.0-beta", "2.0.0-beta", False, True),
    ("<=2", "2.9.9", False, True),
    ("<=2", "3.0.0-alpha", True, False),
    (">2", "2.9.9", False, False),
    (">2", "3.0.0", False, True),
    (">2.0.0", "2.0.1", False, True),
    (">2.0.0", "2.0.0", False, False),
    (">2.0.0-rc.1", "2.0.0", False, True),
    ("^1.2.3", "1.2.2", False, False),
    ("^1.2.3", "2.0.0", False, False),
    ("^1.2.3", "2.0.0-rc.1", True, False),
    ("^0.2.3", "0.2.9", False, True),
    ("^0.2.3", "0.3.0", False, False),
    ("^0.0.3", "0.0.4", False, False),
    ("~1.2.3", "1.2.99", False, True),
    ("~1.2.3", "1.3.0", False, False),
    ("~=1.2", "1.99.0", False, True),
    ("~=1.2", "2.0.0", False, False),
    ("~=1.2.3", "1.2.3", False, True),
    ("~=1.2.3", "1.3.0", False, False),
    ("!=1.2.3", "1.2.3", False, False),
    ("!=1.2.3", "1.2.4", False, True),
    ("!=1.2.*", "1.2.4", False, False),
    ("!=1.2.*", "1.3.0", False, True),
    ("*", "0.0.0", False, True),
    ("*", "1.0.0-rc.1", False, False),
    ("*", "1.0.0-rc.1", True, True),
    (">=1.0.0-alpha", "1.0.0-alpha.beta", False, True),
    (">1.0.0-alpha.1", "1.0.0-alpha.beta", False, True),
    (">1.0.0-alpha.beta", "1.0.0-beta", False, True),
    (">1.0.0-beta", "1.0.0-beta.2", False, True),
    (">1.0.0-beta.2", "1.0.0-beta.11", False, True),
    (">1.0.0-beta.11", "1.0.0-rc.1", False, True),
    (">1.0.0-rc.1", "1.0.0", False, True),
    ("<1.0.0-alpha.1", "1.0.0-alpha", False, True),
    ("<1.0.0-beta.11", "1.0.0-beta.2", False, True),
]

# semver 2.0 precedence (the spec's own example, shuffled): the order version_order gives
PRECEDENCE = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.10.0",
    "2.0.0",
    "10.0.0",
]

BAD_VERSIONS = [
    "",
    "1",
    "1.2",
    "1.2.3.4",
    "01.2.3",
    "1.02.3",
    "1.2.03",
    "1.2.3+build",
    "1.2.3-rc.1+b.2",
    "V1.2.3",
    "vv1.2.3",
    "1.2.3-",
    "1.2.3-01",
    "1.2.-3",
    "-1.2.3",
    "a.b.c",
    "1.2.3 ",
    " 1.2.3",
    "1.2.3\x00",
    "1" * 200 + ".0.0",
    "99999999999999999999.0.0",
]

BAD_SPECS = [
    "",
    " ",
    ",",
    ">=1,",
    ",<2",
    ">=1 <2",
    "=1.2.3",
    ">=",
    "==",
    ">=*",
    "^1.*",
    "~1.2.*",
    ">1.2.*",
    "1.2.3.*",
    "*.*",
    "~=1",
    "1.2.3+b",
    ">=1.2.3+b",
    "=>1",
    "<>1",
    "!1.2.3",
    ">=01",
    ">=1.02",
    "1.x",
    "latest",
    ">=1;<2",
    ">=1,<2," + ",".join(["<3"] * 20),
    "<" * 600,
]


@pytest.mark.parametrize(
    ("spec", "pre", "expected"), RESOLVE, ids=[f"{s}|{p}" for s, p, _ in RESOLVE]
)
def test_resolve(spec: str, pre: bool, expected: str | None) -> None:
    idx = spec_resolve(spec, VERSIONS, [False] * len(VERSIONS), pre)
    assert (None if idx is None else VERSIONS[idx]) == expected


@pytest.mark.parametrize(
    ("spec", "version", "pre", "ok"), MATCH, ids=[f"{s}|{v}|{p}" for s, v, p, _ in MATCH]
)
def test_matches(spec: str, version: str, pre: bool, ok: bool) -> None:
    assert spec_matches(spec, version, pre) is ok


# (spec, yanked versions, expected): yanked releases are skipped by ranges, chosen by an
# exact pin only
YANKS: list[tuple[str, set[str], str | None]] = [
    ("*", {"10.0.0"}, "2.1.0"),
    ("*", {"10.0.0", "2.1.0"}, "2.0.0"),
    (">=1.2,<2", {"1.9.9"}, "1.3.0"),
    (">=1.2,<2", {"1.9.9", "1.3.0", "1.2.10", "1.2.3", "1.2.0"}, None),
    ("==1.9.9", {"1.9.9"}, "1.9.9"),
    ("1.9.9", {"1.9.9"}, "1.9.9"),
    ("==1.9.*", {"1.9.9"}, None),
    ("1.9", {"1.9.9"}, None),
    ("^1", {"1.9.9", "1.3.0"}, "1.2.10"),
    ("~1.2", {"1.2.10"}, "1.2.3"),
    (">=1.9.9,<=1.9.9", {"1.9.9"}, None),
    ("==2.0.0-rc.2", {"2.0.0-rc.2"}, "2.0.0-rc.2"),
    (">=2.0.0-rc.1,<2.0.0", {"2.0.0-rc.2"}, "2.0.0-rc.1"),
    ("==10.0.0", set(), "10.0.0"),
    ("!=10.0.0", {"2.1.0"}, "2.0.0"),
]


@pytest.mark.parametrize(("spec", "yanked", "expected"), YANKS, ids=[y[0] for y in YANKS])
def test_yanked_versions(spec: str, yanked: set[str], expected: str | None) -> None:
    idx = spec_resolve(spec, VERSIONS, [v in yanked for v in VERSIONS], False)
    assert (None if idx is None else VERSIONS[idx]) == expected


def test_precedence_is_semver() -> None:
    import random

    shuffled = PRECEDENCE[:]
    random.Random(7).shuffle(shuffled)
    assert [shuffled[i] for i in version_order(shuffled)] == PRECEDENCE


@pytest.mark.parametrize("text", BAD_VERSIONS, ids=range(len(BAD_VERSIONS)))
def test_bad_versions(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_version(text)


@pytest.mark.parametrize("text", BAD_SPECS, ids=range(len(BAD_SPECS)))
def test_bad_specs(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_spec(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("v1.2.3", "1.2.3"),
        ("1.2.3", "1.2.3"),
        ("v0.0.0-rc.1", "0.0.0-rc.1"),
        ("1.2.3-a.b", "1.2.3-a.b"),
    ],
)
def test_canonical_versions(text: str, canonical: str) -> None:
    assert check_version(text) == canonical


def test_exact_pins_are_reported() -> None:
    assert spec_check("==1.2.3") == "1.2.3"
    assert spec_check("v1.2.3") == "1.2.3"
    assert spec_check("1.2") is None
    assert spec_check(">=1.2.3") is None
    assert spec_check("==1.2.3,!=1.2.4") is None


def test_case_count() -> None:
    """The issue asks for at least 200 resolver cases."""
    total = len(RESOLVE) + len(MATCH) + len(YANKS) + len(BAD_VERSIONS) + len(BAD_SPECS)
    assert total >= 200, total
