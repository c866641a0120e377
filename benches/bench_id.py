"""Area `id`: the bare stat walk, `snapdir id` (every byte hashed) and the no-op id."""

from __future__ import annotations

from benchcore import (
    B3SUM,
    FIND,
    FIND_SH,
    OLD,
    OLD_ID,
    OURS,
    Operation,
    Ratio,
    Step,
    _b3sum,
    _old,
    _ours,
    _tree,
    check_b3sum,
    check_id,
)

ID_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "walk",
        "bare stat walk (`find TREE -printf '%s %T@ %m\\n' > /dev/null`)",
        (Step(FIND, lambda j: ["sh", "-c", FIND_SH, "sh", _tree(j), j.exe(FIND)]),),
        (),
        "The limit of a no-op: one `stat` per entry, nothing read, nothing hashed.",
    ),
    Operation(
        "id",
        "snapshot id, every byte hashed (`snapdir id --no-stat-cache TREE`)",
        (
            # --no-stat-cache: this measures walking and hashing, as the peers do every time.
            Step(OURS, lambda j: _ours(j, "id", "--no-stat-cache", _tree(j)), check=check_id),
            Step(B3SUM, lambda j: _b3sum(j, j.tree.path), check=check_b3sum),
            Step(OLD, lambda j: _old(j, OLD_ID, _tree(j)), check=check_id),
        ),
        (Ratio(OURS, B3SUM), Ratio(OURS, OLD), Ratio(OLD, B3SUM)),
        "A new process each run, warm page cache. b3sum over the same files is the hashing limit.",
    ),
    Operation(
        "noop-id",
        "no-op id: nothing changed since the last run (`snapdir id TREE`, stat cache)",
        (Step(OURS, lambda j: _ours(j, "id", _tree(j)), check=check_id),),
        (
            Ratio(OURS, FIND, "walk"),
            Ratio(OURS, OLD, "id"),
            Ratio(OURS, OURS, "id"),
        ),
        "Our stat cache is warm (the warm-up run fills it). snapdir 1.12 has no cache: its "
        "no-op id is its `id`, so the ratio uses that row.",
        primes=True,
    ),
)
