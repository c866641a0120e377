"""Recordings named as releases (``record --tag NAME@VERSION``, ``replay NAME@RANGE``).

A release names a snapshot, and a recording's last checkpoint is one: ``--tag`` tags the
final checkpoint as an ordinary release whose record's message is ``recording:<name>``
(the label the recording's journal entry carries too). ``replay`` given a release ref
resolves it with the names' own rules (ranges, channels, yanks), reads the recording that
message names, and accepts it only if its last checkpoint is the snapshot the release
names: a release record is untrusted input like the rest of the store, and a message that
names another recording does not redirect a replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import ConflictError, InvalidArgumentError, NotFoundError
from .layout import check_name, load

if TYPE_CHECKING:
    from .._snapdir import RecordingLog
    from ..names.ops import Resolved
    from ..stores import Store

__all__ = [
    "MESSAGE_PREFIX",
    "check_tag_free",
    "is_release_ref",
    "load_ref",
    "load_release",
    "release_recording",
    "tag_final",
]

#: The release record's message for a recording's release.
MESSAGE_PREFIX = "recording:"


def is_release_ref(ref: str) -> bool:
    """A recording name never holds ``@``; a release ref (``NAME@SPEC``, ``NAME@channel``)
    does."""
    return "@" in ref


async def check_tag_free(store: Store, release: str) -> str:
    """Checks ``release`` (``NAME@VERSION``) before a recording starts: well formed, and
    the version not taken (a recording's final checkpoint is new, so a taken version could
    only conflict at the end). Returns it canonical."""
    from ..names.ops import check_version_free

    return await check_version_free(store, release)


async def tag_final(store: Store, release: str, recording: str, final: str) -> Resolved:
    """Tags the recording's final checkpoint ``release``, naming the recording."""
    from ..names.ops import tag

    return await tag(store, release, final, message=f"{MESSAGE_PREFIX}{recording}")


async def load_ref(store: Store, ref: str) -> tuple[str, RecordingLog]:
    """``(name, recording)`` for a recording's name or a release ref naming one: the one
    way every command that reads a recording (``replay``, ``recording info``, ``recording
    export``) takes either."""
    if is_release_ref(ref):
        return await release_recording(store, ref)
    return ref, await load(store, ref)


async def load_release(store: Store, ref: str) -> RecordingLog:
    """The recording a release ref names (see the module's documentation)."""
    return (await release_recording(store, ref))[1]


async def release_recording(store: Store, ref: str) -> tuple[str, RecordingLog]:
    """``(name, recording)`` for the recording a release ref names, read back, verified
    whole, and checked to end at the snapshot the release names."""
    from ..names.ops import resolve

    r = await resolve(store, ref)
    if r.channel and r.version:  # a channel entry's message is the mover's: use the release
        r = await resolve(store, f"{r.name}@=={r.version}", pre=True)
    message = str(r.record.get("message", ""))
    if not message.startswith(MESSAGE_PREFIX):
        raise NotFoundError(
            f"{ref} ({r.name}@{r.version or r.channel}) names snapshot {r.id}, not a "
            "recording (its release was not made by record --tag)"
        )
    name = message[len(MESSAGE_PREFIX) :]
    try:
        check_name(name)
    except InvalidArgumentError:
        raise InvalidArgumentError(f"{ref}: its release names no valid recording") from None
    log = await load(store, name)
    cps = log.checkpoints()
    if not cps or cps[-1][2] != r.id:
        raise ConflictError(
            f"{ref} names snapshot {r.id}, but recording {name!r} ends at "
            f"{cps[-1][2] if cps else 'no checkpoint'}: not using it"
        )
    return name, log
