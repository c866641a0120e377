"""The grammar of names, versions, channels and refs — checked before any key, path or
request is built from them (docs/design/names.md).

* a **name**: lowercase ASCII segments ``[a-z0-9][a-z0-9._-]{0,63}`` joined by ``/``, at
  most 3 (``lab/cal-kit``); a name of 8 to 64 hex digits alone is refused, since a ref
  spelled so is read as a snapshot id (prefix);
* a **version**: semver 2.0 ``X.Y.Z[-pre]``; a leading ``v`` is dropped; build metadata is
  refused (it takes no part in precedence: two keys would name one release). Parsing and
  precedence are the Rust ``semver`` crate's (:mod:`snapdir._snapdir`);
* a **spec**: comparators ``== != >= <= > < ~= ^ ~``, wildcards ``1.2.*``, comma = AND;
* a **channel**: ``[a-z][a-z0-9_-]{0,31}``, never ``latest`` and never version-like
  (``v2``), so that ``name@X`` is read one way only;
* a **ref**: a 64-hex id; an id prefix of 8+ hex digits; ``name@1.2.3``; ``name@SPEC``;
  ``name@channel``; ``name`` (its highest release that is neither a prerelease nor yanked);
  and ``URI#REF`` names the store too (``s3://b/p#cal-kit@^1.2``).
"""

from __future__ import annotations

import re

from .._errors import InvalidArgumentError

__all__ = [
    "NameRef",
    "check_channel",
    "check_name",
    "check_spec",
    "check_version",
    "parse_ref",
    "parse_tag",
    "split_store",
]

_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CHANNEL = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_VERSIONISH = re.compile(r"v[0-9].*")
_HEX = re.compile(r"[0-9a-f]{8,64}")
MAX_SEGMENTS = 3
#: Channel names that would mislead: ``latest`` is what a bare name already means.
RESERVED_CHANNELS = frozenset({"latest"})


def _bad(what: str, text: object, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"invalid {what} {text!r}: {why}", code="INVALID_ARGUMENT")


def check_name(name: str) -> str:
    """A release name, as given (names are case-sensitive and lowercase only)."""
    if not isinstance(name, str) or not name:
        raise _bad("name", name, "empty")
    segs = name.split("/")
    if len(segs) > MAX_SEGMENTS:
        raise _bad("name", name, f"at most {MAX_SEGMENTS} segments joined by '/'")
    for s in segs:
        if not _SEGMENT.fullmatch(s):
            raise _bad(
                "name",
                name,
                f"segment {s!r} must be lowercase letters, digits and ._- (at most 64, "
                "starting with a letter or digit)",
            )
    if _HEX.fullmatch(name):
        raise _bad("name", name, "8 or more hex digits alone read as a snapshot id prefix")
    return name


def check_channel(channel: str) -> str:
    """A channel name: ``stable``, ``beta``, ``prod-eu``."""
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise _bad(
            "channel",
            channel,
            "a lowercase letter, then up to 31 lowercase letters, digits, _ or -",
        )
    if channel in RESERVED_CHANNELS or _VERSIONISH.fullmatch(channel):
        raise _bad("channel", channel, "reserved (it would read as a version)")
    return channel


def check_version(version: str) -> str:
    """The canonical form of a release version (``v1.2.3`` -> ``1.2.3``)."""
    from .._snapdir import version_canonical

    if not isinstance(version, str):
        raise _bad("version", version, "not a string")
    try:
        return version_canonical(version)
    except ValueError as e:
        raise InvalidArgumentError(str(e), code="INVALID_ARGUMENT") from None


def check_spec(spec: str) -> str:
    """A version spec, checked (returned as given, surrounding spaces dropped)."""
    from .._snapdir import spec_check

    if not isinstance(spec, str):
        raise _bad("version spec", spec, "not a string")
    try:
        spec_check(spec)
    except ValueError as e:
        raise InvalidArgumentError(str(e), code="INVALID_ARGUMENT") from None
    return spec.strip()


class NameRef:
    """A parsed ref. ``kind`` is ``id`` (``id`` holds 64 hex), ``prefix`` (``id`` holds
    8-63 hex), ``spec`` (``name`` and ``spec``; a bare name has spec ``*``) or ``channel``
    (``name`` and ``channel``). ``store`` is the URI of a store-qualified ref (else None).
    """

    __slots__ = ("channel", "id", "kind", "name", "spec", "store", "text")

    def __init__(
        self,
        kind: str,
        text: str,
        *,
        id: str = "",
        name: str = "",
        spec: str = "",
        channel: str = "",
        store: str | None = None,
    ) -> None:
        self.kind = kind
        self.text = text
        self.id = id
        self.name = name
        self.spec = spec
        self.channel = channel
        self.store = store

    @property
    def is_name(self) -> bool:
        return self.kind in ("spec", "channel")

    def __repr__(self) -> str:
        return f"NameRef({self.kind}, {self.text!r})"


def split_store(text: str) -> tuple[str | None, str]:
    """``URI#REF`` -> (URI, REF); a plain ref -> (None, REF). The old ``URI@ID`` form is
    also split (a URI never holds ``#``, and holds ``@`` only before a 64-hex id)."""
    if "://" in text:
        if "#" in text:
            uri, _, ref = text.partition("#")
            if not ref:
                raise _bad("ref", text, "nothing after '#'")
            return uri, ref
        uri, at, tail = text.rstrip("/").rpartition("@")
        if at and re.fullmatch(r"[0-9a-fA-F]{64}", tail):
            return uri, tail.lower()
        raise _bad("ref", text, "a store-qualified ref is URI#REF (s3://b/p#cal-kit@^1.2)")
    return None, text


def parse_ref(text: str) -> NameRef:
    """Parse a ref (see the module docstring); store-qualified refs keep their URI in
    ``.store`` (validated by the caller, which opens it)."""
    if not isinstance(text, str) or not text.strip():
        raise _bad("ref", text, "empty")
    if len(text) > 2048 or any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise _bad("ref", text[:80], "too long or contains a control character")
    store, ref = split_store(text.strip())
    low = ref.lower()
    if re.fullmatch(r"[0-9a-f]{64}", low):
        return NameRef("id", text, id=low, store=store)
    if _HEX.fullmatch(low):
        return NameRef("prefix", text, id=low, store=store)
    name, at, rest = ref.partition("@")
    check_name(name)
    if not at:
        return NameRef("spec", text, name=name, spec="*", store=store)
    if not rest:
        raise _bad("ref", text, "nothing after '@' (name@1.2.3, name@^1.2, name@stable)")
    if _CHANNEL.fullmatch(rest) and not _VERSIONISH.fullmatch(rest):
        if rest in RESERVED_CHANNELS:
            raise _bad("ref", text, f"{rest!r} is not a channel: name alone means the highest")
        return NameRef("channel", text, name=name, channel=rest, store=store)
    return NameRef("spec", text, name=name, spec=check_spec(rest), store=store)


def parse_tag(text: str) -> tuple[str, str]:
    """``NAME@VERSION`` (what ``tag`` and ``push --tag`` take) -> (name, canonical version)."""
    name, at, version = text.partition("@")
    if not at:
        raise _bad("tag", text, "expected NAME@VERSION (cal-kit@1.3.0)")
    return check_name(name), check_version(version)


def parse_channel(text: str) -> tuple[str, str]:
    """``NAME@CHANNEL`` -> (name, channel)."""
    name, at, channel = text.partition("@")
    if not at:
        raise _bad("channel", text, "expected NAME@CHANNEL (cal-kit@stable)")
    return check_name(name), check_channel(channel)
