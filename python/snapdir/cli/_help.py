"""The text of ``snapdir --help`` beyond the command list: CI examples, exit statuses and
environment variables. Loaded only to build the full parser (help, a usage error, the
docs), never for a command that runs."""

from __future__ import annotations

from ._output import EXIT_STATUSES

#: Every environment variable snapdir reads: (name, what it does).
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("SNAPDIR_STORE", "default store URI for --store"),
    (
        "SNAPDIR_CACHE_DIR",
        "the local cache (stage, fetch, checkout) and the stat cache; default "
        "$XDG_CACHE_HOME/snapdir, else ~/.cache/snapdir",
    ),
    ("SNAPDIR_STAT_CACHE", "0/false/no/off: hash every file, keep no stat cache"),
    ("SNAPDIR_NO_STAT_CACHE", "1/true/yes/on: hash every file, keep no stat cache"),
    (
        "SNAPDIR_MAX_MANIFEST_BYTES",
        "largest manifest read from a store (default 1 GiB); a larger one is refused",
    ),
    ("SNAPDIR_NO_PROGRESS", "1: no progress reports (as --no-progress)"),
    (
        "SNAPDIR_PROGRESS",
        "default of --progress: auto (bar on a terminal, else plain), bar, plain or none",
    ),
    (
        "SNAPDIR_PROGRESS_INTERVAL",
        "seconds between two status lines of --progress=plain (default 10)",
    ),
    (
        "SNAPDIR_PROGRESS_COUNT_AFTER",
        "seconds a walk reported on runs before its totals are counted beside it (default 1)",
    ),
    ("SNAPDIR_DURABLE", "1: file:// stores fsync every object and manifest they write"),
    (
        "SNAPDIR_RETRY_MAX_SECONDS",
        "overall time budget of the retries of one cloud request (seconds)",
    ),
    ("SNAPDIR_S3_STORE_ENDPOINT_URL", "S3 endpoint (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)"),
    ("SNAPDIR_S3_ADDRESSING_STYLE", "S3 addressing: path, virtual or auto"),
    ("SNAPDIR_S3_MULTIPART_THRESHOLD", "S3 uploads from this many bytes are multipart"),
    ("SNAPDIR_S3_PART_SIZE", "S3 multipart part size (bytes)"),
    ("SNAPDIR_S3_CONDITIONAL_PUT", "0: S3 creates without If-None-Match"),
    ("SNAPDIR_S3_LEAN", "0: every S3 request through botocore's client calls"),
    ("SNAPDIR_B2_REALM", "B2 API URL to authorise against (default: production)"),
    ("SNAPDIR_KEYRING", "0: do not look up store credentials kept by login in the OS keyring"),
    (
        "SNAPDIR_GC_DELAY",
        "seconds gc waits between publishing its plan and re-reading intents and roots (default 2)",
    ),
)

EXAMPLES = """\
  export SNAPDIR_STORE=s3://my-bucket/ci
  ID=$(snapdir push build/ -q)                      # job 1: publish, keep the id
  snapdir pull "$ID" build/ --delete                # job 2: exactly that tree
  snapdir diff --from "$SNAPDIR_STORE@$ID" --to build/ --exit-code   # 1 if it differs
  snapdir verify --id "$ID" --json                  # one JSON object, even on failure"""


def table(rows: tuple[tuple[object, str], ...], width: int) -> str:
    """Two columns, the second wrapped to the terminal with a hanging indent."""
    import textwrap

    from ._common import columns

    indent = " " * (width + 3)
    text_width = max(columns() - 2, width + 23)
    return "\n".join(
        textwrap.fill(
            f"  {k!s:<{width}} {v}",
            text_width,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )
        for k, v in rows
    )


def epilog() -> str:
    return (
        "examples:\n"
        + EXAMPLES
        + "\n\nexit status (every command):\n"
        + table(EXIT_STATUSES, 4)
        + "\n\nenvironment:\n"
        + table(ENVIRONMENT, 31)
        + "\n\n'snapdir COMMAND --help' describes a command. The global flags\n"
        "(--json, -q, -v, --no-progress, --progress) go before or after the command name."
    )
