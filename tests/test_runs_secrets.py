"""No secret reaches a run's record or objects (docs/format.md, "Runs", Secrets).

A corpus of 56 cases: credentials in environment variables of every common shape (tokens,
passwords, cloud keys, URLs with passwords, multi-line private keys, unicode and shell
metacharacters), printed by the command on stdout or stderr, at the start, the end, across
a 64 KiB read boundary, many times over; in argv as literals and after ``--password``-like
flags; in ``--pre`` command output; in a git remote and dirty diff; allowlisted (recorded
as ``<redacted len=N>``) or not; named secret by a ``--redact`` pattern. Each case runs a
real command into a fresh ``file://`` store and then every byte of the store — record,
index keys, journal, objects, manifests — is searched for every secret of the case.

The streaming masker is also checked on its own: a secret split at every possible point
between two reads, and split over random chunkings, is always masked.
"""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
import snapdir
from runsutil import project, stored_bytes
from snapdir.runs.secrets import Masker, mask_argv, record_env, redacted, secret_values

PY = sys.executable
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDsecretkeymaterialline2xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
SA_JSON = (
    '{"type": "service_account", "private_key_id": "0123456789abcdef0123", '
    '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEsecretbody\\n-----END PRIVATE KEY-----\\n"}'
)


@dataclass
class Case:
    id: str
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    #: what must not be stored (default: every env value, and every line of each)
    secrets: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    redact: list[str] = field(default_factory=list)
    pre: list[str] = field(default_factory=list)
    #: the child's program: prints every env value of the case and its argv
    script: str = ""
    git: bool = False

    def all_secrets(self) -> list[str]:
        out = list(self.secrets)
        for v in self.env.values():
            out.append(v)
            out += [ln for ln in v.splitlines() if len(ln) >= 4]
        return out


PRINT_ALL = (
    "import os, sys\n"
    "names = sys.argv[1].split(',') if len(sys.argv) > 1 and sys.argv[1] else []\n"
    "for n in names:\n"
    "    print('value of', n, '=', os.environ[n])\n"
    "print('argv:', sys.argv[2:])\n"
)
ON_STDERR = (
    "import os, sys\n"
    "for n in sys.argv[1].split(','):\n"
    "    sys.stderr.write('err ' + os.environ[n] + '\\n')\n"
)
ACROSS_CHUNKS = (
    "import os, sys\n"
    "v = os.environ[sys.argv[1]].encode()\n"
    "for cut in (1, len(v) // 2, len(v) - 1):\n"
    "    pad = (65536 - cut) % 65536 or 65536\n"
    "    sys.stdout.buffer.write(b'.' * pad + v + b'\\n')\n"
    "    sys.stdout.buffer.flush()\n"
)
MANY_TIMES = (
    "import os, sys\n"
    "v = os.environ[sys.argv[1]]\n"
    "sys.stdout.write(('noise ' * 50 + v + '\\n') * 3000)\n"
)
EDGES = (
    "import os, sys\n"
    "v = os.environ[sys.argv[1]]\n"
    "sys.stdout.write(v + ' middle ' + v)\n"  # at the very start and end, no newline
)

ENV_CASES = [
    Case("github-token", {"GITHUB_TOKEN": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"}),
    Case("generic-secret", {"MY_SECRET": "s3cr3t-value-123"}),
    Case("db-password", {"DB_PASSWORD": "hunter2hunter2"}),
    Case("api-key", {"API_KEY": "AKxyz-api-key-0042"}),
    Case("stripe", {"STRIPE_API_KEY": "sk_live_51HxxxxxxxxxxxxxxxxxxxxxYZ"}),
    Case("aws-secret", {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}),
    Case("aws-session", {"AWS_SESSION_TOKEN": "FwoGZXIvYXdzEJr//////////wEaDOsessiontoken+="}),
    Case("aws-key-id", {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}),
    Case("b2-key", {"B2_APPLICATION_KEY": "K005abcdefghijklmnopqrstuvwxyz0"}),
    Case("gcp-inline-json", {"GOOGLE_APPLICATION_CREDENTIALS": SA_JSON}),
    Case("ssh-private-key", {"SSH_PRIVATE_KEY": PEM}),
    Case("deploy-key", {"DEPLOY_KEY": PEM.replace("secretkey", "deploykey")}),
    Case("lowercase-name", {"npm_token": "npm_abcdefghijklmnop0123"}),
    Case("webhook-secret", {"SLACK_WEBHOOK_SECRET": "whsec_0123456789abcdef"}),
    Case("mysql-pwd", {"MYSQL_PWD": "mysql-pw-4242"}),
    Case("pgpassword", {"PGPASSWORD": "pg-pass-9999"}),
    Case("passphrase", {"GPG_PASSPHRASE": "correct horse battery staple"}),
    Case("store-url", {"SNAPDIR_STORE": "s3://user:pa55word-xyz@bucket/prefix"}),
    Case("proxy-url", {"HTTP_PROXY": "http://proxyuser:proxypass-77@proxy:8080"}),
    Case("ci-job-token", {"CI_JOB_TOKEN": "glcbt-64_abcdefghijk"}),
    Case("twine", {"TWINE_PASSWORD": "pypi-AgEIcHlwaS5vcmcCJGFiY2Q"}),
    Case("hf-token", {"HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz"}),
    Case("openai", {"OPENAI_API_KEY": "sk-proj-abcdefghijklmnop1234"}),
    Case("azure-secret", {"AZURE_CLIENT_SECRET": "azure~client~secret~value"}),
    Case("vault", {"VAULT_TOKEN": "hvs.CAESIabcdefghijklmnop"}),
    Case("unicode", {"SECRET_UNICODE": "pässwörd-ünïcode-✓"}),
    Case("two-lines", {"MULTI_SECRET": "first-line-secret\nsecond-line-secret"}),
    Case("shell-meta", {"SHELL_SECRET": "a$b`c'd\"e\\f|g;h&i"}),
    Case("two-secrets", {"ONE_TOKEN": "token-number-one", "TWO_TOKEN": "token-number-two"}),
    Case("nested", {"OUTER_SECRET": "outer-inner-secret-x", "INNER_SECRET": "inner-secret"}),
    Case("credential-name", {"REGISTRY_CREDENTIALS": "user:registry-cred-55"}),
    Case("private-key-var", {"JWT_PRIVATE_KEY": "jwt-private-key-material"}),
    Case("auth-header-var", {"HTTP_AUTHORIZATION": "Bearer abc.def.ghi-jwt"}),
    Case("on-stderr", {"STDERR_TOKEN": "stderr-token-value"}, script=ON_STDERR),
    Case("across-64k-reads", {"CHUNK_SECRET": "chunk-boundary-secret-value"}, script=ACROSS_CHUNKS),
    Case("many-times", {"REPEATED_TOKEN": "repeated-token-3000x"}, script=MANY_TIMES),
    Case("start-and-end", {"EDGE_SECRET": "edge-secret-value"}, script=EDGES),
    Case(
        "in-pre-output",
        {"PRE_SECRET": "printed-by-pre-command"},
        pre=["echo pre says $PRE_SECRET"],
    ),
    Case("git-remote-and-diff", {"GIT_TOKEN": "git-token-in-diff-01"}, git=True),
]

FLAG_CASES = [
    Case("flag-password", argv=["--password", "hunter2x"], secrets=["hunter2x"]),
    Case("flag-password-eq", argv=["--password=eqpass99"], secrets=["eqpass99"]),
    Case("flag-token", argv=["--token", "abcdefgh"], secrets=["abcdefgh"]),
    Case("flag-api-key", argv=["--api-key=xyz12345"], secrets=["xyz12345"]),
    Case("flag-db-password", argv=["--db-password", "pw123456"], secrets=["pw123456"]),
    Case("flag-secret", argv=["--secret", "foo12345"], secrets=["foo12345"]),
    Case("flag-auth-token", argv=["--auth-token=tok12345"], secrets=["tok12345"]),
    Case("flag-access-key", argv=["--access-key", "AKIA1234zz"], secrets=["AKIA1234zz"]),
    Case("flag-upper", argv=["--PASSWORD", "UPPERpass1"], secrets=["UPPERpass1"]),
    Case("flag-credentials", argv=["--credentials=cred-val-7"], secrets=["cred-val-7"]),
    Case("flag-bearer", argv=["--bearer", "bearer-tok-1"], secrets=["bearer-tok-1"]),
    Case("flag-pass", argv=["--pass", "pass-value-2"], secrets=["pass-value-2"]),
    # short values: still redacted after a flag, where the context says what they are
    Case("flag-short", argv=["--password", "ab"], secrets=[]),
    Case("flag-single-dash", argv=["-token", "single-dash-tok"], secrets=["single-dash-tok"]),
    Case(
        "env-value-as-argument",
        {"ARG_TOKEN": "token-passed-as-arg"},
        argv=["token-passed-as-arg"],
    ),
    Case(
        "env-value-inside-argument",
        {"URL_PASSWORD": "inside-url-pw"},
        argv=["https://user:inside-url-pw@example.invalid/x"],
    ),
]

ALLOW_CASES = [
    Case("allowlisted-secret", {"ALLOWED_TOKEN": "allowed-but-secret"}, allow=["ALLOWED_TOKEN"]),
    Case("allowlisted-glob", {"APP_PASSWORD": "glob-allowed-pw"}, allow=["APP_*"]),
    Case(
        "redact-pattern",
        {"DATABASE_DSN": "postgres://u:dsnpw@h/db"},
        allow=["DATABASE_DSN"],
        redact=["*_DSN"],
    ),
]

CASES = ENV_CASES + FLAG_CASES + ALLOW_CASES


def test_the_corpus_has_at_least_fifty_cases() -> None:
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)


def _git_project(root: Path, token: str) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", *args], cwd=root, check=True, capture_output=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(root), "GIT_CONFIG_NOSYSTEM": "1"},
        )  # fmt: skip

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "0")
    git("remote", "add", "origin", f"https://ci:{token}@git.example.invalid/repo.git")
    (root / "tracked.txt").write_text("before\n")
    git("add", "tracked.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "1")
    (root / "tracked.txt").write_text(f"after: {token}\n")  # a dirty diff holding it


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_secret_in_any_stored_byte(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    store_dir = tmp_path / "store"
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    if case.git:
        _git_project(root, case.env["GIT_TOKEN"])
    script = case.script or PRINT_ALL
    argv = [PY, "-c", script, ",".join(case.env), *case.argv]

    async def main() -> snapdir.RunResult:
        return await snapdir.run_command(
            argv,
            store=f"file://{store_dir}",
            cwd=root,
            stream=False,
            env=case.allow,
            redact=case.redact,
            pre=case.pre,
            git=case.git,
            inputs=["data"],
        )

    result = anyio.run(main)
    assert result.status == 0
    stored = stored_bytes(store_dir)
    assert any(name.startswith(".objects/") for name, _ in stored)
    for secret in case.all_secrets():
        needle = secret.encode()
        leaks = [name for name, data in stored if needle in data]
        leaks += [name for name, _ in stored if secret in name]
        assert not leaks, f"{secret!r} stored in {leaks}"
    record = next(data for name, data in stored if name.startswith(".snapdir/runs/rec/"))
    for name in case.allow:
        matching = [k for k in case.env if k == name or name.endswith("*")]
        for k in matching:
            assert f'"{k}":"{redacted(case.env[k])}"'.encode() in record
    if case.argv and case.id.startswith("flag-"):
        assert b"<redacted len=" in record


def test_allowlisted_plain_values_are_recorded_verbatim() -> None:
    env = {"LANG": "C.UTF-8", "MY_TOKEN": "tok-value", "UNLISTED": "x"}
    assert record_env(env, ["LANG", "MY_*"]) == {
        "LANG": "C.UTF-8",
        "MY_TOKEN": "<redacted len=9>",
    }


@pytest.mark.parametrize("secret", ["abcd", "secret-value", "multi\nline-secret", "ünï-cødé"])
def test_the_masker_finds_a_secret_split_at_every_point(secret: str) -> None:
    raw = secret.encode()
    for cut in range(len(raw) + 1):
        m = Masker([secret])
        data = b"<<" + raw + b">>"
        out = m.feed(data[: 2 + cut]) + m.feed(data[2 + cut :]) + m.flush()
        assert raw not in out
        assert out == b"<<" + redacted(secret).encode() + b">>"


def test_the_masker_over_random_chunkings() -> None:
    rng = random.Random(17)
    secrets = ["short1", "a-much-longer-secret-value-0123456789", "mid-size-secret"]
    for _ in range(200):
        parts = [rng.choice([*secrets, "filler text ", "\n", "x"]) for _ in range(40)]
        data = "".join(parts).encode()
        m = Masker(secrets)
        out = b""
        i = 0
        while i < len(data):
            n = rng.randint(1, 50)
            out += m.feed(data[i : i + n])
            i += n
        out += m.flush()
        for s in secrets:
            assert s.encode() not in out
        assert out == Masker(secrets).text(data.decode()).encode()


def test_secret_values_take_each_line_of_a_multiline_value() -> None:
    values = secret_values({"SSH_PRIVATE_KEY": PEM, "PATH": "/usr/bin"})
    assert PEM in values
    assert all(ln in values for ln in PEM.splitlines())
    assert "/usr/bin" not in values


def test_mask_argv_flags() -> None:
    m = Masker(["literal-secret"])
    assert mask_argv(["tool", "--password", "pw", "--out", "x", "literal-secret"], m) == [
        "tool", "--password", "<redacted len=2>", "--out", "x", "<redacted len=14>",
    ]  # fmt: skip
    assert mask_argv(["--token=abc"], m) == ["--token=<redacted len=3>"]
    assert mask_argv(["--keyboard", "qwerty"], m) == ["--keyboard", "qwerty"]
