"""Reports in this process: what generate() holds, secrets kept out, files on disk, and the
signal handling install() and uninstall() do."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until as wait_for

from heartline.errors import HeartlineError
from heartline.service import _report_collect, reports

SECTIONS_TEXT = [
    "== Threads (",
    "== asyncio (",
    "== Greenlets",
    "== Process ==",
    "== Packages ==",
    "== Configuration ==",
    "== Environment ==",
]
SECTIONS_JSON = {
    "format",
    "title",
    "time",
    "pid",
    "threads",
    "asyncio",
    "greenlets",
    "process",
    "packages",
    "config",
    "environment",
    "raw",
    "errors",
}


@pytest.fixture(autouse=True)
def clean_reports() -> Iterator[None]:
    """No installation, provider or loop left over from another test, before and after."""
    reports.uninstall()
    previous = signal.getsignal(signal.SIGUSR2)
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    yield
    reports.uninstall()
    signal.signal(signal.SIGUSR2, previous)
    for name in list(_report_collect._providers):
        reports.unregister(name)
    _report_collect._loops.clear()


def helper_running() -> bool:
    return any(t.name == "heartline-reports" for t in threading.enumerate())


def send_and_wait(directory: Path, count_before: int) -> reports.StoredReport:
    """Signal this process and wait for the report it writes."""
    state = reports._Current.state
    assert state is not None
    written = state.written
    os.kill(os.getpid(), signal.SIGUSR2)
    wait_for(lambda: state.written > written, what="the report")
    found = reports.latest(directory)
    assert found is not None
    return found


def a_function_with_a_distinct_name() -> str:
    return reports.generate("text")


def test_text_report_has_every_section_and_the_callers_stack() -> None:
    """generate("text") lists threads (with the calling function), asyncio, greenlets, process,
    packages, configuration and environment."""
    text = a_function_with_a_distinct_name()
    for header in SECTIONS_TEXT:
        assert header in text, header
    assert "in a_function_with_a_distinct_name" in text
    assert f"pid {os.getpid()}," in text
    assert "Thread 'MainThread' (main)" in text


def test_json_report_has_every_section_and_parses() -> None:
    """generate("json") is one JSON object with every section; the process section names this
    pid and the packages include heartline."""
    data = json.loads(reports.generate("json"))
    assert set(data) == SECTIONS_JSON
    assert data["pid"] == os.getpid()
    assert data["process"]["pid"] == os.getpid()
    assert data["process"]["ppid"] == os.getppid()
    assert "heartline" in data["packages"]
    main = [t for t in data["threads"] if t["main"]]
    assert len(main) == 1
    assert main[0]["stack"][-1]["function"] == "test_json_report_has_every_section_and_parses"
    assert data["errors"] == {}


def test_generate_refuses_an_unknown_format() -> None:
    """Only "text" and "json" exist."""
    with pytest.raises(ValueError, match="'text' or 'json'"):
        reports.generate("xml")  # type: ignore[arg-type]


def test_threads_show_name_ident_and_daemon_flag() -> None:
    """A named daemon thread appears with its ident, native id and daemon flag, in the function
    where it waits."""
    stop = threading.Event()

    def parked_in_this_function() -> None:
        stop.wait()

    t = threading.Thread(target=parked_in_this_function, name="parked-worker", daemon=True)
    t.start()
    try:
        data = json.loads(reports.generate("json"))
        text = reports.generate("text")
    finally:
        stop.set()
        t.join()
    (rec,) = [r for r in data["threads"] if r["name"] == "parked-worker"]
    assert rec["ident"] == t.ident
    assert rec["native_id"] == t.native_id
    assert rec["daemon"] is True
    assert "parked_in_this_function" in [f["function"] for f in rec["stack"]]
    assert f"Thread 'parked-worker' (daemon) (ident {t.ident:#018x}" in text


def test_registered_loop_shows_its_tasks_with_their_await_chains() -> None:
    """A registered event loop's tasks appear by name, with the coroutine they wait in."""

    async def waits_on_a_future(fut: asyncio.Future[None]) -> None:
        await fut

    async def main() -> tuple[str, str]:
        reports.register_loop(asyncio.get_running_loop())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(waits_on_a_future(fut), name="sleeper-task")
        await asyncio.sleep(0)
        text, js = reports.generate("text"), reports.generate("json")
        fut.set_result(None)
        await task
        return text, js

    text, js = asyncio.run(main())
    assert "Task 'sleeper-task' coroutine " in text
    assert "in waits_on_a_future" in text
    (loop,) = json.loads(js)["asyncio"]
    (task,) = [t for t in loop["tasks"] if t["name"] == "sleeper-task"]
    assert task["stack"][-1]["function"] == "waits_on_a_future"
    assert "Future pending" in task["waiting_for"]


def test_a_closed_loop_is_left_out() -> None:
    """A registered loop that was closed adds nothing."""
    loop = asyncio.new_event_loop()
    reports.register_loop(loop)
    loop.close()
    assert json.loads(reports.generate("json"))["asyncio"] == []


def test_provider_secrets_are_redacted_in_text_and_json() -> None:
    """Provider values under secret-looking keys, nested too, are "***"; others stay."""
    reports.register(
        "db",
        lambda: {
            "host": "db.example",
            "Password": "pw-VALUE-1",
            "options": {"api-key": "key-VALUE-2", "timeout": 5, "auth_mode": "x-VALUE-3"},
            "replicas": [{"token": "tok-VALUE-4", "port": 5432}],
        },
    )
    text = reports.generate("text")
    js = reports.generate("json")
    for secret in ("pw-VALUE-1", "key-VALUE-2", "x-VALUE-3", "tok-VALUE-4"):
        assert secret not in text
        assert secret not in js
    assert "db.example" in text
    config = json.loads(js)["config"]["db"]
    assert config == {
        "host": "db.example",
        "Password": "***",
        "options": {"api-key": "***", "timeout": 5, "auth_mode": "***"},
        "replicas": [{"token": "***", "port": 5432}],
    }


def test_a_failing_provider_shows_its_error_and_the_report_goes_on() -> None:
    """A provider that raises is shown with its error; the others are still there."""

    def broken() -> dict[str, object]:
        raise RuntimeError("no config today")

    reports.register("broken", broken)
    reports.register("fine", lambda: {"level": 3})
    config = json.loads(reports.generate("json"))["config"]
    assert config == {"broken": {"error": "RuntimeError: no config today"}, "fine": {"level": 3}}


def test_unregister_removes_a_provider() -> None:
    """An unregistered provider is no longer called."""
    reports.register("gone", lambda: {"a": 1})
    reports.unregister("gone")
    reports.unregister("never-there")
    assert json.loads(reports.generate("json"))["config"] == {}


def test_environment_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables with secret-looking names show "***"; others show their value."""
    monkeypatch.setenv("MY_API_KEY", "xyz-secret-1")
    monkeypatch.setenv("DB_PASSWORD", "hunter2-secret-2")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret-3")
    monkeypatch.setenv("PLAIN_SETTING", "visible-value")
    text = reports.generate("text")
    js = reports.generate("json")
    for secret in ("xyz-secret-1", "hunter2-secret-2", "ghp-secret-3"):
        assert secret not in text
        assert secret not in js
    assert "MY_API_KEY=***" in text
    assert "PLAIN_SETTING=visible-value" in text
    env = json.loads(js)["environment"]
    assert env["DB_PASSWORD"] == "***"
    assert env["PLAIN_SETTING"] == "visible-value"


@pytest.mark.parametrize(
    "key",
    ["password", "DB_PASSWD", "client_secret", "AccessToken", "apikey", "API_KEY", "api-key",
     "private_key", "credentials", "Authorization", "OAUTH_URL"],
)  # fmt: skip
def test_redact_hides_secret_looking_keys(key: str) -> None:
    """Each of the secret patterns, in any case, hides the value."""
    assert reports.redact({key: "v", "other": "w"}) == {key: "***", "other": "w"}


def test_redact_keeps_plain_values_and_stringifies_the_rest() -> None:
    """Plain JSON values stay; other objects become their repr; tuples become lists."""
    assert reports.redact({"n": 1, "f": 1.5, "b": True, "z": None, "t": (1, 2)}) == {
        "n": 1,
        "f": 1.5,
        "b": True,
        "z": None,
        "t": [1, 2],
    }
    assert reports.redact({"p": Path("/x")}) == {"p": repr(Path("/x"))}


#: Names whose values are secrets (real-world names), each with a distinct value.
SECRET_NAMES = [
    "DB_PASS", "MYSQL_PWD", "REDIS_PASS", "SENTRY_DSN", "JWT_SIGNING_KEY", "PASSPHRASE",
    "STRIPE_SK", "STRIPE_PK", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN", "GH_TOKEN", "NPM_TOKEN", "CI_JOB_TOKEN", "VAULT_TOKEN", "PGPASSWORD",
    "MYSQL_ROOT_PASSWORD", "POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "SMTP_PASSWD",
    "LDAP_BIND_PW", "KEYSTORE_PASSWORD", "DOCKER_AUTH_CONFIG", "GOOGLE_APPLICATION_CREDENTIALS",
    "SLACK_WEBHOOK_URL", "DISCORD_WEBHOOK", "API_KEY", "OPENAI_API_KEY", "apiKey", "x-api-key",
    "APIKEY", "SECRET_KEY", "SECRET_KEY_BASE", "CLIENT_SECRET", "OAUTH_URL", "TWILIO_AUTH_TOKEN",
    "BASIC_AUTH", "Authorization", "PROXY_AUTHORIZATION", "BEARER", "SSH_PRIVATE_KEY", "privateKey",
    "TLS_KEY", "SIGNING_CERT_P12", "CLIENT_PFX", "ENCRYPTION_KEY", "HMAC_KEY", "KEY",
    "SESSION_SECRET", "SESSION_COOKIE", "sessionid", "PASSWORD_SALT", "accessToken",
    "refresh_token", "db.password", "OAuth2Token", "TOTP_SECRET", "OTP", "WALLET_MNEMONIC",
    "AZURE_STORAGE_SAS",
]  # fmt: skip

#: Names that look a little like secrets, or are everywhere, and stay visible: a word inside
#: another word (KEYBOARD, MONKEY, TOKENIZERS, AUTHOR, ASKPASS, PASSENGER), the shell's working
#: directories (PWD), names of where a secret is kept, not the secret (..._FILE, ..._DIR,
#: SSH_AUTH_SOCK), and certificates, which are public.
VISIBLE_NAMES = [
    "PATH", "HOME", "LANG", "LC_ALL", "USER", "SHELL", "TERM", "HOSTNAME", "TZ", "PYTHONPATH",
    "VIRTUAL_ENV", "PWD", "OLDPWD", "KEYBOARD_LAYOUT", "KEYMAP", "MONKEY", "MONKEYPATCH",
    "HOTKEY", "TOKENIZERS_PARALLELISM", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "XAUTHORITY",
    "SSH_ASKPASS", "PASSENGER_APP_ENV", "COMPASS_MODE", "BYPASS_CACHE", "SKIP_TESTS",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "SSH_AUTH_SOCK",
    "POSTGRES_PASSWORD_FILE", "TLS_KEY_PATH", "PASSWORD_STORE_DIR", "GNOME_KEYRING_CONTROL",
    "PIP_INDEX_URL", "SIGNAL", "DESIGNER", "TLS_CERT", "PIP_CERT", "NODE_EXTRA_CA_CERTS",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_values_under_secret_names_are_hidden(name: str) -> None:
    """A value under a secret-looking name is "***", whatever the case or separators."""
    assert reports.redact({name: "s3cr3t-value", "other": "w"}) == {name: "***", "other": "w"}


@pytest.mark.parametrize("name", VISIBLE_NAMES)
def test_values_under_ordinary_names_stay_visible(name: str) -> None:
    """A name that only looks like a secret's (or names where one is kept) shows its value."""
    assert reports.redact({name: "plain-value"}) == {name: "plain-value"}


def test_an_empty_secret_stays_empty() -> None:
    """None and "" under a secret name are shown as they are: there is nothing to hide, and
    "no password set" is worth seeing; every other kind of value is hidden."""
    assert reports.redact({"password": None, "token": "", "pin_key": 1234, "auth": {"a": 1}}) == {
        "password": None,
        "token": "",
        "pin_key": "***",
        "auth": "***",
    }


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("postgres://app:SECRET@db/app", "postgres://app:***@db/app"),
        ("redis://:SECRET@cache:6379/0", "redis://:***@cache:6379/0"),
        ("amqp://guest:SECRET@rabbit:5672/vhost", "amqp://guest:***@rabbit:5672/vhost"),
        ("http://user:SECRET@proxy:3128", "http://user:***@proxy:3128"),
        ("socks5h://u:SECRET@127.0.0.1:1080", "socks5h://u:***@127.0.0.1:1080"),
        ("mongodb://app:SECRET@m1:27017,m2:27017/app?replicaSet=rs0",
         "mongodb://app:***@m1:27017,m2:27017/app?replicaSet=rs0"),
        ("postgres://a:SECRET1@h1/db,postgres://b:SECRET2@h2/db",
         "postgres://a:***@h1/db,postgres://b:***@h2/db"),
        ("postgres://app:p@SECRET@db/app", "postgres://app:***@db/app"),
        ("https://ghp_SECRET0123456789abcdefghij@github.com/org/repo.git",
         "https://***@github.com/org/repo.git"),
        ("run --url postgres://app:SECRET@db/app now", "run --url postgres://app:***@db/app now"),
        ("run --dsn postgres://app:SECRET@db/app now", "run --dsn *** now"),
        ("host=db user=app password=SECRET dbname=app", "host=db user=app password=*** dbname=app"),
        ("host=db password='se cret SECRET' port=5432", "host=db password='***' port=5432"),
        ("Server=db;User Id=app;Password=SECRET;Database=app",
         "Server=db;User Id=app;Password=***;Database=app"),
        ("AccountName=acct;AccountKey=SECRET==;EndpointSuffix=core.windows.net",
         "AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net"),
        ("https://api.example/v1?access_token=SECRET&page=2",
         "https://api.example/v1?access_token=***&page=2"),
        ("next=https://h/?token=SECRET&x=1", "next=https://h/?token=***&x=1"),
        ("worker --db-password=SECRET --verbose", "worker --db-password=*** --verbose"),
        ("worker --api-token SECRET --verbose", "worker --api-token *** --verbose"),
        ("env DB_PASS=SECRET ./run", "env DB_PASS=*** ./run"),
        ("Settings(db_password='SECRET', host='db')", "Settings(db_password='***', host='db')"),
        ('{"user": "app", "password": "SECRET"}', '{"user": "app", "password": "***"}'),
        ('{"auths": {"reg": {"auth": "SECRET"}}, "n": 1}', '{"auths": ***, "n": 1}'),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET\n-----END OPENSSH PRIVATE KEY-----\nok",
         "***\nok"),
    ],
)  # fmt: skip
def test_secrets_inside_text_are_hidden_whatever_the_key(value: str, shown: str) -> None:
    """Credentials in URLs (the rest of the URL stays), in connection strings, query strings,
    command lines, reprs, JSON and PEM keys are hidden under any key, in any string."""
    assert reports.redact({"anything": value}) == {"anything": shown}
    assert reports.redact([value]) == [shown]


@pytest.mark.parametrize(
    "value",
    ["postgres://db/app", "ssh://git@github.com/org/repo.git", "http://host:8080/a?email=u@x.com",
     "https://user@example.com/", "mailto:someone@example.com", "keyboard=us monkey=1",
     "pip install pkg==1.0 --index-url https://pypi.org/simple", "a -p 8080 -v"],
)  # fmt: skip
def test_text_without_secrets_is_left_alone(value: str) -> None:
    """URLs without a password, user names, ports and ordinary options are not touched."""
    assert reports.redact({"anything": value}) == {"anything": value}


def test_a_private_key_beside_a_certificate_is_hidden() -> None:
    """A certificate stays visible (it is public); a private key stored in the same value is
    hidden."""
    cert = "-----BEGIN CERTIFICATE-----\nMIIBpublic\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcSECRET\n-----END EC PRIVATE KEY-----\n"
    assert reports.redact({"TLS_CERT": cert + key}) == {"TLS_CERT": cert + "***\n"}


def test_the_value_after_a_secret_option_in_an_argv_is_hidden() -> None:
    """In a list, the item after --password, --api-token, -token... is hidden (not the next
    option, nor the value of -p, which is a port as often as a password)."""
    argv = ["python", "app.py", "--password", "SECRET1", "-token", "SECRET2", "--auth-token",
            "--verbose", "--port", "80", "-p", "8080", "--key-file", "/etc/app.key"]  # fmt: skip
    assert reports.redact(argv) == [
        "python", "app.py", "--password", "***", "-token", "***", "--auth-token", "--verbose",
        "--port", "80", "-p", "8080", "--key-file", "/etc/app.key",
    ]  # fmt: skip


class _Settings:
    def __repr__(self) -> str:
        return "Settings(url='postgres://app:SECRET-OBJ@db/app', api_key='SECRET-OBJ2')"


def test_provider_secrets_at_any_depth_are_hidden_in_text_and_json() -> None:
    """A provider's nested mappings, lists, tuples and objects: secret names and credentials in
    URLs are hidden at every depth, in both forms of the report; the rest stays readable."""
    reports.register(
        "app",
        lambda: {
            "database": {"url": "postgres://app:SECRET-A@db/app", "pool": {"size": 5}},
            "replicas": [
                {"nodes": ["redis://:SECRET-B@r1:6379/0", "redis://:SECRET-C@r2:6379/0"]},
                {"deep": [[{"level": {"MYSQL_PWD": "SECRET-D", "host": "r3"}}]]},
            ],
            "headers": [("Authorization", "Bearer SECRET-E"), ("Accept", "*/*")],
            "settings": _Settings(),
            "command": "worker --api-token SECRET-F --queue fast",
            ("postgres://k:SECRET-G@db/app"): "a URL as a key",
        },
    )
    text = reports.generate("text")
    js = reports.generate("json")
    for secret in "ABCDEFG":
        assert f"SECRET-{secret}" not in text
        assert f"SECRET-{secret}" not in js
    assert "SECRET-OBJ" not in text and "SECRET-OBJ" not in js
    config = json.loads(js)["config"]["app"]
    assert config["database"] == {"url": "postgres://app:***@db/app", "pool": {"size": 5}}
    assert config["replicas"][0] == {"nodes": ["redis://:***@r1:6379/0", "redis://:***@r2:6379/0"]}
    assert config["replicas"][1]["deep"][0][0]["level"] == {"MYSQL_PWD": "***", "host": "r3"}
    assert config["headers"] == [["Authorization", "***"], ["Accept", "*/*"]]
    assert config["settings"] == "Settings(url='postgres://app:***@db/app', api_key='***')"
    assert config["command"] == "worker --api-token *** --queue fast"
    assert config["postgres://k:***@db/app"] == "a URL as a key"
    assert "url: postgres://app:***@db/app" in text


def test_a_failing_providers_error_shows_no_credentials() -> None:
    """A provider that fails with a URL in its message: the error is shown, its password not."""

    def broken() -> dict[str, object]:
        raise ConnectionError("cannot reach postgres://app:SECRET-H@db/app")

    reports.register("db", broken)
    config = json.loads(reports.generate("json"))["config"]
    assert config == {"db": {"error": "ConnectionError: cannot reach postgres://app:***@db/app"}}


def test_environment_secrets_of_every_kind_are_hidden_in_text_and_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every secret name of the table, and URLs with passwords under ordinary names, are hidden
    in the environment section of both forms; ordinary names keep their values."""
    for i, name in enumerate(SECRET_NAMES):
        monkeypatch.setenv(name, f"env-secret-{i:03d}")
    monkeypatch.setenv("DATABASE_URL", "postgres://app:env-secret-url1@db/app")
    monkeypatch.setenv("HTTP_PROXY", "http://me:env-secret-url2@proxy:3128")
    monkeypatch.setenv("KEYBOARD_LAYOUT", "us-visible")
    text = reports.generate("text")
    js = reports.generate("json")
    assert "env-secret-" not in text
    assert "env-secret-" not in js
    env = json.loads(js)["environment"]
    assert {name: env[name] for name in SECRET_NAMES} == dict.fromkeys(SECRET_NAMES, "***")
    assert env["DATABASE_URL"] == "postgres://app:***@db/app"
    assert "DATABASE_URL=postgres://app:***@db/app" in text
    assert "HTTP_PROXY=http://me:***@proxy:3128" in text
    assert "KEYBOARD_LAYOUT=us-visible" in text


def test_process_section_from_proc_without_psutil(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without psutil the process section comes from /proc: pid, parent, command line, CPU
    times, RSS, open files, I/O counters and children."""
    monkeypatch.setattr(_report_collect, "_use_psutil", False)
    path = tmp_path / "held-open.txt"
    with open(path, "w") as held:
        process = json.loads(reports.generate("json"))["process"]
        assert held.fileno() >= 0
    assert process["source"] == "/proc"
    assert process["pid"] == os.getpid()
    assert process["ppid"] == os.getppid()
    assert isinstance(process["cmdline"], list) and process["cmdline"]
    assert process["rss"] > 1_000_000
    assert process["cpu_times"]["user"] >= 0
    assert str(path) in process["open_files"]
    assert "read_bytes" in process["io"]
    assert isinstance(process["children"], list)
    assert isinstance(process["user"], str)


def test_process_section_from_psutil() -> None:
    """Where there is no /proc, the process section comes from psutil (when installed) and
    says so; the fields are those of the /proc reader."""
    psutil = pytest.importorskip("psutil")
    process = _report_collect._process_psutil(psutil)
    assert process["source"] == "psutil"
    assert process["pid"] == os.getpid()
    assert process["ppid"] == os.getppid()
    assert isinstance(process["num_threads"], int) and process["num_threads"] >= 1
    assert isinstance(process["open_files"], list)
    assert isinstance(process["sockets"], list)
    assert isinstance(process["children"], list)
    assert "user" in process["cpu_times"]  # type: ignore[operator]


def test_process_section_lists_children(tmp_path: Path) -> None:
    """A child process of this one appears in the process section, by pid."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        process = json.loads(reports.generate("json"))["process"]
    finally:
        child.communicate(b"")
    assert child.pid in [c["pid"] for c in process["children"]]


def test_install_writes_a_report_on_the_signal(tmp_path: Path) -> None:
    """After install(), SIGUSR2 writes a text and a JSON report, mode 0600, in a new directory
    of mode 0700; the text holds the raw faulthandler dump taken in the signal handler."""
    directory = tmp_path / "a" / "b"
    assert reports.install(directory=directory) == str(directory)
    assert reports.installed()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    found = send_and_wait(directory, 0)
    assert found.pid == os.getpid()
    assert found.json_path is not None
    for path in (found.path, found.json_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = found.read_text()
    assert "heartline: report on SIGUSR2" in text
    assert "== Raw dump at the signal (faulthandler" in text
    assert "in send_and_wait" in text
    assert found.read_json()["title"] == "report on SIGUSR2"
    leftovers = [n for n in os.listdir(directory) if ".tmp." in n]
    assert leftovers == []


def test_only_the_newest_reports_are_kept(tmp_path: Path) -> None:
    """With keep=3, five signals leave the three newest reports (text and JSON each)."""
    reports.install(directory=tmp_path, keep=3)
    written = [send_and_wait(tmp_path, i).path for i in range(5)]
    assert len(set(written)) == 5
    kept = [r.path for r in reports.list(tmp_path)]
    assert kept == written[:-4:-1]
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("report-"))
    assert len(names) == 6


def test_list_ignores_other_files_and_sorts_newest_first(tmp_path: Path) -> None:
    """list() reads report names (time, then pid), ignores everything else, and pairs each text
    with its JSON; latest() is the first; a missing directory has none."""
    names = [
        "report-20261121T152233.000001Z-10.txt",
        "report-20261121T152233.000001Z-9.txt",
        "report-20261121T152233.000001Z-9.json",
        "report-20251231T235959.999999Z-1.txt",
        "report-20261121T152233.000001Z-11.txt.tmp.4",
        "raw-10.txt",
        "notes.txt",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    found = reports.list(tmp_path)
    assert [(Path(r.path).name, r.pid) for r in found] == [
        ("report-20261121T152233.000001Z-10.txt", 10),
        ("report-20261121T152233.000001Z-9.txt", 9),
        ("report-20251231T235959.999999Z-1.txt", 1),
    ]
    assert found[1].json_path == str(tmp_path / "report-20261121T152233.000001Z-9.json")
    assert found[0].json_path is None
    assert abs(found[2].time - 1767225599.999999) < 1e-3
    latest = reports.latest(tmp_path)
    assert latest is not None and latest.path == found[0].path
    assert reports.list(tmp_path / "missing") == []
    assert reports.latest(tmp_path / "missing") is None


def test_install_refuses_a_signal_the_application_handles(tmp_path: Path) -> None:
    """A Python handler already on SIGUSR2 makes install() raise SignalInUse (a
    HeartlineError) and stay out: the handler is untouched and no thread starts."""

    def app_handler(signum: int, frame: object) -> None:
        return None

    signal.signal(signal.SIGUSR2, app_handler)
    with pytest.raises(reports.SignalInUse, match="force=True") as info:
        reports.install(directory=tmp_path)
    assert isinstance(info.value, HeartlineError)
    assert info.value.signum == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR2) is app_handler
    assert not reports.installed()
    assert not helper_running()
    assert os.listdir(tmp_path) == []


def test_force_takes_the_signal_and_uninstall_gives_it_back(tmp_path: Path) -> None:
    """force=True replaces the application's handler; uninstall() puts it back."""
    calls: list[int] = []

    def app_handler(signum: int, frame: object) -> None:
        calls.append(signum)

    signal.signal(signal.SIGUSR2, app_handler)
    reports.install(directory=tmp_path, force=True)
    assert signal.getsignal(signal.SIGUSR2) is not app_handler
    send_and_wait(tmp_path, 0)
    assert calls == []
    reports.uninstall()
    assert signal.getsignal(signal.SIGUSR2) is app_handler
    os.kill(os.getpid(), signal.SIGUSR2)
    wait_for(lambda: calls == [signal.SIGUSR2], what="the application's handler")


def test_uninstall_restores_the_default_and_stops_the_helper(tmp_path: Path) -> None:
    """uninstall() puts SIG_DFL back, ends the helper thread, removes the empty raw file and
    allows a new install(); a second uninstall() does nothing."""
    reports.install(directory=tmp_path, signal=signal.SIGUSR1)
    assert helper_running()
    assert (tmp_path / f"raw-{os.getpid()}.txt").exists()
    reports.uninstall()
    reports.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert not helper_running()
    assert not reports.installed()
    assert not (tmp_path / f"raw-{os.getpid()}.txt").exists()
    reports.install(directory=tmp_path, signal=signal.SIGUSR1)
    reports.uninstall()


def test_install_twice_or_off_the_main_thread_is_refused(tmp_path: Path) -> None:
    """A second install() raises ReportsError; so does install() from another thread."""
    reports.install(directory=tmp_path)
    with pytest.raises(reports.ReportsError, match="installed already"):
        reports.install(directory=tmp_path)
    reports.uninstall()
    errors: list[BaseException] = []

    def from_a_thread() -> None:
        try:
            reports.install(directory=tmp_path)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=from_a_thread)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], reports.ReportsError)
    assert "main thread" in str(errors[0])
    with pytest.raises(ValueError, match="keep"):
        reports.install(directory=tmp_path, keep=0)


def test_providers_passed_to_install_are_registered(tmp_path: Path) -> None:
    """install(providers=...) registers each provider."""
    reports.install(directory=tmp_path, providers={"app": lambda: {"workers": 4}})
    assert json.loads(reports.generate("json"))["config"] == {"app": {"workers": 4}}


def test_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$HEARTLINE_REPORT_DIR wins; else $XDG_RUNTIME_DIR/heartline/reports/<program>; else
    ~/.local/state/heartline/reports/<program>."""
    monkeypatch.setattr("sys.argv", ["/srv/bin/my-service.py", "--flag"])
    monkeypatch.setenv("HEARTLINE_REPORT_DIR", str(tmp_path / "explicit"))
    assert reports.default_directory() == str(tmp_path / "explicit")
    monkeypatch.delenv("HEARTLINE_REPORT_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert reports.default_directory() == str(tmp_path / "heartline/reports/my-service")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("sys.argv", ["-c"])
    assert reports.default_directory() == str(
        tmp_path / "home/.local/state/heartline/reports/python"
    )


def test_greenlets_are_listed_only_when_a_green_library_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without gevent or eventlet the greenlet section is None; with one imported, every
    suspended greenlet object found through the garbage collector is listed with its stack."""
    import sys
    import types
    from collections.abc import Generator

    class FakeGreenlet:
        """Stands in for greenlet.greenlet: a suspended one exposes its frame as gr_frame."""

        def __init__(self, gen: Generator[None, None, None]) -> None:
            self.gen = gen

        @property
        def gr_frame(self) -> object:
            return self.gen.gi_frame

    def green_task_body() -> Generator[None, None, None]:
        yield

    gen = green_task_body()
    next(gen)
    parked = FakeGreenlet(gen)
    assert json.loads(reports.generate("json"))["greenlets"] is None
    assert "== Greenlets: none (neither gevent nor eventlet is imported) ==" in reports.generate()
    fake = types.ModuleType("greenlet")
    fake.greenlet = FakeGreenlet  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "greenlet", fake)
    monkeypatch.setitem(sys.modules, "gevent", types.ModuleType("gevent"))
    greenlets = json.loads(reports.generate("json"))["greenlets"]
    assert [[f["function"] for f in g["stack"]] for g in greenlets] == [["green_task_body"]]
    assert "== Greenlets (1 suspended) ==" in reports.generate()
    assert parked.gr_frame is not None


# --- waiting for a new report -------------------------------------------------------------------


def wait_while(
    directory: Path,
    known: set[str],
    then: Callable[[], None],
    *,
    timeout: float = 20.0,
    with_json: bool = False,
) -> tuple[reports.StoredReport | None, float, int]:
    """Run wait_for_report() on a fresh loop, call ``then`` once it is waiting; give what it
    returned, the seconds it took and how often a 10 ms ticker on the same loop ran meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> tuple[reports.StoredReport | None, float, int]:
        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        waiting = asyncio.create_task(
            reports.wait_for_report(directory, known=known, timeout=timeout, with_json=with_json)
        )
        await asyncio.sleep(0)  # the waiter has looked once and sleeps on its watch
        then()
        found = await waiting
        elapsed = time.monotonic() - started
        tick.cancel()
        return found, elapsed, ticks

    return asyncio.run(main())


def test_wait_for_report_gives_the_report_the_signal_writes(tmp_path: Path) -> None:
    """A report written while wait_for_report() waits is given back at once (not at the
    deadline), text and JSON; the reports that were there before are not."""
    reports.install(directory=tmp_path)
    old = send_and_wait(tmp_path, 0)
    found, elapsed, _ = wait_while(
        tmp_path, {old.path}, lambda: os.kill(os.getpid(), signal.SIGUSR2), with_json=True
    )
    assert found is not None and found.path != old.path
    assert found.json_path is not None and "report on SIGUSR2" in found.read_text()
    assert elapsed < 10


def test_wait_for_report_gives_up_at_its_deadline_and_leaves_the_loop_running(
    tmp_path: Path,
) -> None:
    """With no new report, wait_for_report() gives None once the timeout has passed, not
    before; an old report does not count, and the loop runs other tasks all the while."""
    (tmp_path / "report-20261121T152233.000001Z-9.txt").write_text("old")
    known = {r.path for r in reports.list(tmp_path)}
    found, elapsed, ticks = wait_while(tmp_path, known, lambda: None, timeout=0.5)
    assert found is None
    assert elapsed >= 0.5
    assert ticks >= 10


def test_wait_for_report_with_json_waits_for_the_json(tmp_path: Path) -> None:
    """with_json: a text report alone is not taken; it is once its JSON is there too, even
    when a writer makes the files in place rather than by rename."""
    name = "report-20261121T152233.000001Z-9"

    async def main() -> reports.StoredReport | None:
        waiting = asyncio.create_task(
            reports.wait_for_report(tmp_path, known=set(), timeout=20, with_json=True)
        )
        await asyncio.sleep(0)  # the waiter has looked once and sleeps on its watch
        (tmp_path / f"{name}.txt").write_text("text")
        await asyncio.sleep(0.2)  # time enough to see the text, which it must not take
        assert not waiting.done()
        (tmp_path / f"{name}.json").write_text("{}")
        return await asyncio.wait_for(waiting, 10)

    found = asyncio.run(main())
    assert found is not None and found.json_path == str(tmp_path / f"{name}.json")


def test_wait_for_report_follows_a_directory_made_while_it_waits(tmp_path: Path) -> None:
    """A directory that does not exist yet is waited for: once it is made, with parents, and
    a report lands in it, the report is given back."""
    directory = tmp_path / "a" / "b"
    found, elapsed, _ = wait_while(
        directory,
        set(),
        lambda: (reports.install(directory=directory), os.kill(os.getpid(), signal.SIGUSR2)),
    )
    assert found is not None and Path(found.path).parent == directory
    assert elapsed < 10
