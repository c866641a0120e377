"""Area `transfer`: push and pull on `file://` stores and local peers (copy, tar, rclone,
restic, snapdir 1.12), the incremental pull and verify."""

from __future__ import annotations

from benchcore import (
    B3SUM,
    CP,
    FIND,
    OLD,
    OLD_PULL,
    OLD_PUSH,
    OLD_VERIFY,
    OURS,
    RCLONE,
    RESTIC,
    TAR,
    TAR_FILE,
    Job,
    Operation,
    Ratio,
    Step,
    _dest,
    _in_tree,
    _new_store,
    _new_store_uri,
    _old,
    _ours,
    _sid,
    _store,
    _store_path,
    _tree,
    apply_changes,
    both,
    check_copy,
    check_id,
    check_incremental,
    check_output,
    check_prepared_copy,
    check_pulled,
    check_store,
    check_store_copy,
    check_true,
    mkdirs,
    restic_init,
)

RESTIC_SAVED = check_output("snapshot", "saved")
NO_DELETE = "cannot delete: leaves the files the 1 % change added"


def _restic_restore(j: Job) -> list[str]:
    """restic's pull: the latest snapshot of the repository into the destination."""
    return [j.exe(RESTIC), "restore", "latest", "--repo", _store(j), "--target", _dest(j)]


TRANSFER_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "copy",
        "local copy (`cp -r TREE DEST`)",
        (Step(CP, lambda j: [j.exe(CP), "-r", _tree(j), _dest(j)], check=check_copy("dest")),),
        (),
        "The limit of a push to an empty `file://` store and of a pull to an empty directory.",
    ),
    Operation(
        "copy-store",
        "local copy of our filled store (`cp -r STORE DEST`)",
        (
            Step(
                CP,
                lambda j: [j.exe(CP), "-r", _store_path(j), _dest(j)],
                needs_store=True,
                store_of=OURS,
                uses_id=False,
                check=check_store_copy,
            ),
        ),
        (Ratio(CP, CP, "copy"),),
        "The cost of creating the store layout itself: the same objects and the shard "
        "directories of the 1.x layout (`.objects/abc/def/ghi/...`: about 2.2 new directories "
        "per object in an empty store), copied without reading anything twice, hashing or "
        "verifying. A push into an empty `file://` store cannot be faster than creating what "
        "it creates; the `copy` row creates only the tree's own files and directories.",
    ),
    Operation(
        "noop-push",
        "no-op push: the unchanged tree into a store that has it",
        (
            Step(
                OURS,
                lambda j: _ours(j, "push", _tree(j), "--store", _store(j)),
                check=check_id,
                needs_store=True,
                uses_id=False,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PUSH, _tree(j), _store(j)),
                check=check_id,
                needs_store=True,
                uses_id=False,
            ),
            Step(
                RCLONE,
                lambda j: [j.exe(RCLONE), "sync", _tree(j), _store(j)],
                check=check_prepared_copy,
                needs_store=True,
                uses_id=False,
            ),
            Step(
                RESTIC,
                lambda j: [j.exe(RESTIC), "backup", "--repo", _store(j), "--host", "bench", "."],
                check=RESTIC_SAVED,
                needs_store=True,
                uses_id=False,
                cwd=_in_tree,
            ),
        ),
        (
            Ratio(OURS, FIND, "walk"),
            Ratio(OURS, OLD),
            Ratio(OURS, RCLONE),
            Ratio(OURS, RESTIC),
        ),
        "Into the store the tool's own push filled (untimed). Ours: stat cache warm. "
        "rclone: `sync` compares size and mtime; restic: `backup` with its parent snapshot "
        "skips files whose metadata did not change; snapdir 1.12 re-hashes everything. "
        "tar has no no-op: its push rewrites the archive.",
        primes=True,
    ),
    Operation(
        "push",
        "push to an empty store (`file://` for snapdir)",
        (
            Step(
                OURS,
                lambda j: _ours(
                    j, "push", "--no-stat-cache", _tree(j), "--store", _new_store_uri(j)
                ),
                setup=mkdirs("store"),
                check=both(check_id, check_store),
                location=_new_store_uri,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PUSH, _tree(j), _new_store_uri(j)),
                setup=mkdirs("store"),
                check=both(check_id, check_store),
                location=_new_store_uri,
            ),
            Step(
                TAR,
                lambda j: [j.exe(TAR), "-cf", f"{_new_store(j)}/{TAR_FILE}", "-C", _tree(j), "."],
                setup=mkdirs("store"),
                check=check_store,
                location=lambda j: f"{_new_store(j)}/{TAR_FILE}",
            ),
            Step(
                RCLONE,
                lambda j: [j.exe(RCLONE), "copy", _tree(j), _new_store(j)],
                check=check_copy("store"),
                location=_new_store,
            ),
            Step(
                RESTIC,
                lambda j: [
                    j.exe(RESTIC),
                    "backup",
                    "--repo",
                    _new_store(j),
                    "--host",
                    "bench",
                    ".",
                ],
                setup=restic_init,
                check=RESTIC_SAVED,
                location=_new_store,
                cwd=_in_tree,
            ),
        ),
        (
            Ratio(OURS, CP, "copy"),
            Ratio(OURS, CP, "copy-store"),
            Ratio(OURS, OLD),
            Ratio(OURS, TAR),
            Ratio(OURS, RCLONE),
            Ratio(OURS, RESTIC),
        ),
        "A fresh empty store each run (restic: `restic init` before the timer). Ours with "
        "`--no-stat-cache`: every byte read, hashed and copied, as for the peers.",
    ),
    Operation(
        "pull",
        "pull into an empty directory",
        (
            Step(
                OURS,
                lambda j: _ours(j, "pull", _sid(j), _dest(j), "--store", _store(j)),
                setup=mkdirs("dest"),
                check=check_copy("dest"),
                needs_store=True,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PULL, _sid(j), _store(j), _dest(j)),
                setup=mkdirs("dest"),
                check=check_pulled,
                needs_store=True,
            ),
            Step(
                TAR,
                lambda j: [j.exe(TAR), "-xf", _store(j), "-C", _dest(j)],
                setup=mkdirs("dest"),
                check=check_copy("dest"),
                needs_store=True,
                uses_id=False,
            ),
            Step(
                RCLONE,
                lambda j: [j.exe(RCLONE), "copy", _store(j), _dest(j)],
                check=check_copy("dest"),
                needs_store=True,
                uses_id=False,
            ),
            Step(
                RESTIC,
                _restic_restore,
                check=check_copy("dest"),
                needs_store=True,
                uses_id=False,
            ),
        ),
        (
            Ratio(OURS, CP, "copy"),
            Ratio(OURS, OLD),
            Ratio(OURS, TAR),
            Ratio(OURS, RCLONE),
            Ratio(OURS, RESTIC),
        ),
        "Each tool reads the store its own push filled (untimed) and writes a fresh empty "
        "directory.",
    ),
    Operation(
        "incr-pull",
        "incremental pull into a directory that differs by 1 %",
        (
            Step(
                OURS,
                lambda j: _ours(
                    j, "pull", _sid(j), _dest(j), "--store", _store(j), "--force", "--delete"
                ),
                setup=apply_changes,
                check=check_incremental(exact=True),
                needs_store=True,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PULL, _sid(j), _store(j), _dest(j)),
                setup=apply_changes,
                check=both(check_output("pulled"), check_incremental(exact=False)),
                needs_store=True,
                note=NO_DELETE,
            ),
            Step(
                RCLONE,
                lambda j: [j.exe(RCLONE), "sync", _store(j), _dest(j)],
                setup=apply_changes,
                check=check_incremental(exact=True),
                needs_store=True,
                uses_id=False,
            ),
            Step(
                RESTIC,
                _restic_restore,
                setup=apply_changes,
                check=check_incremental(exact=False),
                needs_store=True,
                uses_id=False,
                note=NO_DELETE + " (restic 0.14 has no `--delete`)",
            ),
        ),
        (
            Ratio(OURS, OURS, "pull"),
            Ratio(OURS, OLD),
            Ratio(OURS, RCLONE),
            Ratio(OURS, RESTIC),
            Ratio(RCLONE, RCLONE, "pull"),
        ),
        "Prepared once per tool (untimed): a full pull by the same tool into a kept directory. "
        "Before each run (untimed) about 1 % of the files are changed there deterministically "
        "(every 100th path: rewritten with other bytes of the same size, deleted, or given a "
        "new sibling); the timed pull must make the directory the snapshot again (ours with "
        "`--force --delete`, rclone `sync`), checked file by file after every run. tar has no "
        "incremental extract (it is its full pull).",
        dest_from="pull",
    ),
    Operation(
        "verify",
        "verify a snapshot in the store",
        (
            Step(
                OURS,
                lambda j: _ours(j, "verify", "--id", _sid(j), "--store", _store(j)),
                needs_store=True,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_VERIFY, _sid(j), _store(j)),
                check=check_true,
                needs_store=True,
            ),
            Step(
                RESTIC,
                lambda j: [j.exe(RESTIC), "check", "--read-data", "--repo", _store(j)],
                check=check_output("no errors were found"),
                needs_store=True,
                uses_id=False,
            ),
        ),
        (Ratio(OURS, B3SUM, "id"), Ratio(OURS, OLD), Ratio(OURS, RESTIC)),
        "Re-reads and re-hashes every object of the store: b3sum over the tree (the `id` "
        "row) is its hashing limit.",
    ),
)
