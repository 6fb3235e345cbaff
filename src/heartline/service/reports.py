"""Reports on demand: send the process a signal, get a file that says what it is doing.

``reports.install()`` (from the main thread) arranges that ``SIGUSR2`` writes a report: every
thread's stack, the asyncio tasks of the known loops with their await chains, the suspended
greenlets (when gevent or eventlet is imported), the process (pid, parent, user, command line,
CPU times, memory, open files and sockets, I/O counters, children; read from /proc, or with
psutil where there is no /proc), the versions of the
distributions whose modules are imported, the configuration of registered providers
(``reports.register(name, fn)``) and the environment. Secrets are replaced by ``***`` wherever
a report shows values (configuration, environment, command line; see :func:`redact`): values
under secret-looking names, and passwords inside URLs, connection strings and options whatever
the name (``postgres://app:***@db/app``). Each report is written twice, as text and as JSON,
next to the previous ones; :func:`generate` builds one on demand without any of that.

**How a signal becomes a report.** Two handlers share the signal:

* ``faulthandler.register(chain=True)`` runs in C, in the real signal handler: it writes the raw
  stack of the thread that took the signal (normally the main thread) to a file opened at
  install, ``raw-<pid>.txt`` in the report directory. It needs no GIL, so a program stuck in C
  code that holds the GIL still shows where it is, at once.
* It then chains to a Python-level handler (so that the signal visibly has an owner, and
  :func:`uninstall` can put the previous one back), which writes one byte to a pipe.

A helper thread, started at install, sleeps in ``poll()`` on that pipe and on an inotify watch
of the raw file: no timer, no wake-up while idle. It wakes when faulthandler writes (a kernel
event, whatever the main thread is doing), waits until the dump is complete, builds the full
report with the raw dump folded in, writes the files and empties the raw file.

Why not just the Python handler: Python runs it in the main thread only, between bytecodes; a
signal that lands while the main thread is about to block in a system call (``input()``, a
lock) is handled only when that call returns, which can be never. Why the raw dump covers one
thread and not all: faulthandler reads other threads' frames without the GIL while the thread
holding it changes them, and that crashed the process (SIGSEGV) in about one signal in five
while another thread was busy importing; the full report has every thread, read safely.

**Files.** In ``directory``: by default ``$HEARTLINE_REPORT_DIR``, else
``$XDG_RUNTIME_DIR/heartline/reports/<program>``, else
``~/.local/state/heartline/reports/<program>`` (``<program>`` is the script's name, so a
restarted program finds its earlier reports). Names sort by time, then pid:
``report-20261121T152233.123456Z-4242.txt`` and ``.json``; each is written to a temporary file
and renamed, mode 0600 (directories we create: 0700). The newest ``keep`` reports stay, older
ones are deleted. :func:`list` and :func:`latest` read them back, from any process.

**Limits.** The application's signal handlers are its own: :func:`install` refuses a signal
that already has a handler (other than the default or "ignore") unless ``force=True``, and
:func:`uninstall` puts back what was there. A ``faulthandler.register`` the application made
for the same signal is invisible to that check and is replaced. Where inotify is missing, the
Python-level nudge is the only wake-up. A forked child inherits no report machinery (its
handlers are put back as they were before install): call :func:`install` again there. Finding
greenlets walks every object the garbage collector knows. Building a report takes the GIL in
turns with the application (a few milliseconds for hundreds of threads); the first report after
install is not slower, since the helper warms up right at start (imports, installed
distributions, source lines: ~0.1 s of its own time, more when the application is busy). Every
system call the helper makes lets a busy application thread keep the GIL for a switch interval
(5 ms), so the report reads few files: source lines come from ``linecache`` without checking the
files for changes, and with more than 32 threads only the main thread's children are listed.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import faulthandler
import gc
import os
import re
import signal as _signal
import sys
import threading
import time

from heartline._util import atomic_write
from heartline.errors import HeartlineError
from heartline.service._stacks import __name__ as _stacks_module
from heartline.service._stacks import greenlet_snapshot, loop_snapshot, thread_snapshot

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterable, Mapping
    from types import FrameType
    from typing import Literal

    Provider = Callable[[], Mapping[str, object]]
    Format = Literal["text", "json"]
    from logging import Logger
    from signal import _HANDLER as _Handler

__all__ = [
    "REDACTED",
    "ReportsError",
    "SignalInUse",
    "StoredReport",
    "default_directory",
    "generate",
    "install",
    "installed",
    "latest",
    "list",
    "redact",
    "register",
    "register_loop",
    "uninstall",
    "unregister",
]

#: What a secret value is replaced with.
REDACTED = "***"

_REPORT_NAME = re.compile(r"^report-(\d{8}T\d{6}\.\d{6}Z)-(\d+)\.txt$")
#: Seconds uninstall() waits for a helper that is writing a report.
_JOIN_GRACE = 10.0


class ReportsError(HeartlineError):
    """Reports cannot be installed or written as asked (you did it)."""

    exit_code = 2


class SignalInUse(ReportsError):
    """The application already handles the signal: reports will not take it over."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


# --- what a report holds ------------------------------------------------------------------------

_providers: dict[str, Provider] = {}
_loops: dict[int, object] = {}  # id -> weakref.ref to an event loop
_registry_lock = threading.Lock()


def register(name: str, provider: Provider) -> None:
    """Add ``provider()``'s mapping to every report, under ``name`` (replacing an earlier one).

    Secrets are shown as ``***`` (see :func:`redact`): values whose key looks like a secret, at
    any depth, and passwords inside URLs and connection strings under any key. A provider that
    fails does not lose the report: its error is shown instead.
    """
    if not callable(provider):
        raise TypeError(f"a provider must be callable, not {provider!r}")
    with _registry_lock:
        _providers[name] = provider


def unregister(name: str) -> None:
    """Forget the provider ``name`` (nothing happens if there is none)."""
    with _registry_lock:
        _providers.pop(name, None)


def register_loop(loop: asyncio.AbstractEventLoop) -> None:
    """List ``loop``'s tasks in reports, as long as the loop lives."""
    import weakref

    key = id(loop)

    def forget(_: object) -> None:
        with _registry_lock:
            _loops.pop(key, None)

    with _registry_lock:
        _loops[key] = weakref.ref(loop, forget)


def _known_loops() -> builtins.list[asyncio.AbstractEventLoop]:
    with _registry_lock:
        refs = builtins.list(_loops.values())
    loops = []
    for ref in refs:
        loop = ref() if callable(ref) else None
        if loop is not None:
            loops.append(loop)
    return loops


def redact(value: object, *, key: str = "") -> object:
    """``value`` as plain data (mappings, lists, str, int, float, bool, None; other objects
    become their ``repr``) with its secrets replaced by ``***``, at any depth.

    * A mapping entry (or a ``(name, value)`` tuple) whose key names a secret hides its whole
      value; an empty value (None, ``""``) stays, there is nothing to hide.
    * In every string, whatever its key: the password of a URL (``postgres://app:***@db/app``,
      the rest stays), a user name alone of 20 characters or more (a token,
      ``https://***@github.com``), the value of ``NAME=value``, ``"NAME": value`` and
      ``--NAME value`` when NAME names a secret (``password=***``), and PEM private keys.
    * In a list (a command line), the item after an option that names a secret
      (``["--token", "***"]``). ``-p`` is left alone: it is a port as often as a password.

    A name is cut into words (at ``_``, ``-``, ``.`` and between camelCase words), and names a
    secret when one of its words is a password (``pass``, ``pw``, ``pwd``, ``passwd``,
    ``password``, ``passphrase``), a secret or a token (``secret``, ``token``, ``bearer``,
    ``otp``, ``sig``, ``sas``, ``mnemonic``, ``webhook``: a webhook URL is its own secret), a
    key (``key``, ``keys``, and ``apikey``, ``accesskey``, ``signingkey``... but not
    ``keyboard``, ``monkey``, ``hotkey``; ``sk`` and ``pk`` as in ``STRIPE_SK``), credentials
    or a session (``dsn``, ``cred``, ``credentials``, ``auth``, ``oauth``, ``authorization``,
    ``cookie``, ``session``), or key material (``private``, ``salt``, ``pepper``, ``pem``,
    ``p12``, ``pfx``, ``jks``). Not secrets: ``author`` and ``authority`` (``GIT_AUTHOR_NAME``,
    ``XAUTHORITY``), ``tokenizers`` (``TOKENIZERS_PARALLELISM``), ``askpass`` (a program),
    ``cert`` (certificates are public, ``NODE_EXTRA_CA_CERTS``; a private key stored with one
    is hidden by the PEM rule above); a name whose last word is a location, which names where a
    secret is kept and not the secret (``POSTGRES_PASSWORD_FILE``, ``SSL_CERT_DIR``,
    ``SSH_AUTH_SOCK``: words ``file``, ``path``, ``dir``, ``directory``, ``folder``, ``sock``,
    ``socket``); the shell's ``PWD`` and ``OLDPWD``. ``GOOGLE_APPLICATION_CREDENTIALS`` is
    hidden although it normally holds a path: some tools put the key itself there.
    """
    if key and _secret_name(key):
        return value if value is None or value == "" else REDACTED
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        try:
            items = builtins.list(value.items())
        except Exception:
            return _scrub_plain(value)
        out: dict[str, object] = {}
        for k, v in items:
            name = _scrub(str(k))
            out[name] = redact(v, key=name)
        return out
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return [_scrub(value[0]), redact(value[1], key=value[0])]
    if isinstance(value, (builtins.list, tuple, set, frozenset)):
        return _redact_items(value)
    return _scrub_plain(value)


def _redact_items(items: Iterable[object]) -> builtins.list[object]:
    out: builtins.list[object] = []
    hide_next = False
    for item in items:
        if hide_next and isinstance(item, str) and item and not item.startswith("-"):
            out.append(REDACTED)  # the value of ``--password VALUE`` in an argv
            hide_next = False
            continue
        hide_next = isinstance(item, str) and _secret_option(item)
        out.append(redact(item))
    return out


def _plain(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the report
        return f"<{type(value).__name__} (repr failed: {exc!r})>"


def _scrub_plain(value: object) -> object:
    plain = _plain(value)
    return _scrub(plain) if isinstance(plain, str) else plain


# Which names hold secrets. A name is cut into words (at anything but letters and digits, and
# between camelCase words), and it names a secret when one of its words does. Whole words only
# for the short or ambiguous ones ("pass", not "compass" or "passenger"; "key", not "keyboard"
# or "monkey"), anywhere in a word for the unambiguous ones ("PGPASSWORD", "accesstoken").
_SENSITIVE_WORD = r"""(?x)
    ^(?: pass | pw | pwd | dsn | sk | pk | cred | creds | sig | sas | otp | totp | hotp
       | salt | pepper | pem | p12 | pfx | jks
       | bearer | session | sessionid | sessid | keys? )$
    | passw | passphrase | secret | credential | mnemonic | private | cookie | webhook
    | token(?!i[sz])         # not "tokenizers"
    | auth(?!or(?!i[sz]))    # "authorization", not "author" nor "authority"
    | (?: api | access | secret | priv | private | signing | sign | master | encryption
        | encrypt | enc | crypt | ssh | gpg | pgp | licen[cs]e | auth | hmac | session | client
        | app | account | storage | shared | service | deploy | consumer | admin | root | p )
      keys?$                 # "apikey", "sshkey", "pkey"; not "hotkey" nor "monkey"
    """
_WORD = r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+"
_NOT_WORD = r"[^A-Za-z0-9]+"
#: A last word that says the value is where a secret is kept, not the secret: shown
#: (``POSTGRES_PASSWORD_FILE``, ``SSL_CERT_DIR``, ``SSH_AUTH_SOCK``).
_LOCATION_WORDS = frozenset(
    {"file", "files", "path", "paths", "dir", "dirs", "directory", "folder", "sock", "socket"}
)
#: Names the shell sets that look like secrets and are not: the working directories.
_VISIBLE_NAMES = frozenset({"PWD", "OLDPWD"})
_secret_names: dict[str, bool] = {}


def _secret_name(name: str) -> bool:
    """Whether the value under ``name`` is a secret (the rules are in :func:`redact`)."""
    found = _secret_names.get(name)
    if found is None:
        words = [w.lower() for part in _re(_NOT_WORD).split(name) for w in _re(_WORD).findall(part)]
        found = (
            name not in _VISIBLE_NAMES
            and bool(words)
            and not (len(words) > 1 and words[-1] in _LOCATION_WORDS)
            and any(_re(_SENSITIVE_WORD).search(w) for w in words)
        )
        if len(_secret_names) < 4096:  # names come from the application: bound the cache
            _secret_names[name] = found
    return found


_OPTION = r"-{1,2}[A-Za-z][\w.-]*"


def _secret_option(arg: str) -> bool:
    """Whether ``arg`` is an option (``--db-password``, ``-token``) whose value is a secret."""
    return _re(_OPTION).fullmatch(arg) is not None and _secret_name(arg)


# Secrets inside text, whatever the key. A URL's password: userinfo has no "/?#" (RFC 3986),
# but an unescaped "@" in a password is common and clients take the last "@" as the end of
# it, so "@" is allowed inside as long as another "@" follows before the host.
_URL_USERINFO = (
    r"""(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@"'\[\]]*:)"""
    r"""(?P<secret>[^\s@/?#"']*(?:@[^\s@/?#"']*(?=@))*)@"""
)
#: ``https://<token>@github.com``: a long user name alone is taken for a token.
_URL_LONG_USER = r"""(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<secret>[^\s:/?#@"'\[\]]{20,})@"""
#: ``password=`` (libpq and ADO.NET connection strings, query strings, ``--password=``,
#: ``repr()`` of objects), ``--password `` (an option, its value next), ``"password": `` (JSON,
#: Python's dict repr): the name and what comes before the value. The values are cut out by
#: hand (:func:`_hide_values`), not by these patterns, so that a name inside another name's
#: value (``next=https://h/?token=x``) is found too.
_NAMED = r"(?<![\w.-])-{0,2}(?P<name>[A-Za-z_][\w.-]*)[ \t]*=[ \t]*"
_OPTION_SPACE = r"(?<![\w.-])(?P<name>-{1,2}[A-Za-z][\w.-]*)[ \t]+(?=[^\s-])"
_QUOTED_NAME = r"""(?P<q>["'])(?P<name>[^"'\s]{1,100})(?P=q)[ \t]*:[ \t]*"""
_PEM_PRIVATE = (
    r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
)


_compiled: dict[str, re.Pattern[str]] = {}


def _re(source: str) -> re.Pattern[str]:
    """``source`` compiled on first use: the patterns above take ~3 ms to compile, which a
    program importing this module should not pay at start-up."""
    found = _compiled.get(source)
    if found is None:
        found = _compiled[source] = re.compile(source)
    return found


def _scrub(text: str) -> str:
    """``text`` with the secrets it holds replaced (see :func:`redact`)."""
    if "://" in text and "@" in text:
        text = _re(_URL_USERINFO).sub(_hide_nonempty, text)
        text = _re(_URL_LONG_USER).sub(_hide_nonempty, text)
    if "=" in text:
        text = _hide_values(text, _re(_NAMED), "&;")
    if "-" in text and (" " in text or "\t" in text):
        text = _hide_values(text, _re(_OPTION_SPACE), "")
    if ":" in text and ("'" in text or '"' in text):
        text = _hide_values(text, _re(_QUOTED_NAME), ",}]")
    if "PRIVATE KEY-----" in text:
        text = _re(_PEM_PRIVATE).sub(REDACTED, text)
    return text


def _hide_nonempty(m: re.Match[str]) -> str:
    return f"{m['head']}{REDACTED}@" if m["secret"] else m[0]


def _hide_values(text: str, names: re.Pattern[str], stops: str) -> str:
    """``text`` with the value after each secret name ``names`` finds replaced: a quoted value
    up to its closing quote (the quotes stay), another up to white space or one of ``stops``."""
    out: builtins.list[str] = []
    done = 0
    for m in names.finditer(text):
        if m.start() < done or not _secret_name(m["name"]):
            continue  # a name inside a value hidden already, or no secret
        start = m.end()
        quote = text[start] if start < len(text) and text[start] in "\"'" else ""
        if quote:
            end = _quoted_end(text, start)
        elif start < len(text) and text[start] in "{[":
            end = _nested_end(text, start)  # a JSON object or list: all of it
        else:
            end = start
            while end < len(text) and not text[end].isspace() and text[end] not in stops:
                end += 1
        if end - start <= 2 * len(quote):
            continue  # an empty value: nothing to hide
        out += [text[done:start], quote, REDACTED, quote]
        done = end
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _quoted_end(text: str, start: int) -> int:
    """Where the string quoted at ``start`` ends (after its closing quote, or the text's end)."""
    end = start + 1
    while end < len(text) and text[end] != text[start]:
        end += 2 if text[end] == "\\" else 1
    return min(end + 1, len(text))


def _nested_end(text: str, start: int) -> int:
    """Where the bracketed value opened at ``start`` closes (or the text's end)."""
    depth = 0
    end = start
    while end < len(text):
        c = text[end]
        if c in "\"'":
            end = _quoted_end(text, end)
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return end + 1
        end += 1
    return end


#: GIL switch interval while a report is being written (see _Installed._serve).
_REPORT_SWITCH_INTERVAL = 0.0005


def _collect(
    *, title: str, raw: str | None, skip: tuple[int, ...], config: bool = True
) -> dict[str, object]:
    """The report as plain data; a section that fails holds its error instead. Without
    ``config`` the providers are not called (the warm-up must not run application code)."""
    errors: dict[str, str] = {}

    def section(name: str, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            return None

    now = time.time()
    threads, stacks = thread_snapshot(skip=skip, hide=(__name__, _stacks_module))
    report: dict[str, object] = {
        "format": "heartline-report/1",
        "title": title,
        "time": _iso(now),
        "pid": os.getpid(),
        "threads": threads,
    }
    loops = [loop_snapshot(lp, stacks) for lp in _known_loops()]
    report["asyncio"] = [lp for lp in loops if lp is not None]
    report["greenlets"] = section("greenlets", greenlet_snapshot)
    # Every section that shows the application's values goes through redact(): the command
    # line and the configuration as much as the environment.
    report["process"] = redact(section("process", _process))
    report["packages"] = section("packages", _packages)
    report["config"] = section("config", _config) if config else {}
    report["environment"] = redact(dict(os.environ))
    report["raw"] = raw
    report["errors"] = redact(errors)
    return report


def _config() -> dict[str, object]:
    with _registry_lock:
        providers = dict(_providers)
    out: dict[str, object] = {}
    for name, provider in sorted(providers.items()):
        try:
            out[name] = redact(provider())
        except Exception as exc:  # its message may hold what it failed to connect to
            out[name] = redact({"error": f"{type(exc).__name__}: {exc}"})
    return out


#: distribution names by top-level module, and versions by distribution: both slow to find, and
#: fixed for the life of the process.
_dist_map: dict[str, Mapping[str, builtins.list[str]]] = {}
_versions: dict[str, str] = {}


def _warm_packages() -> Mapping[str, builtins.list[str]]:
    found = _dist_map.get("map")
    if found is None:
        import importlib.metadata

        found = _dist_map["map"] = importlib.metadata.packages_distributions()
    return found


def _packages() -> dict[str, str]:
    import importlib.metadata

    dist_map = _warm_packages()
    tops = {name.partition(".")[0] for name in builtins.list(sys.modules)}
    out: dict[str, str] = {}
    for top in sorted(tops):
        # Editable installs map no files to their modules: try the module's own name then.
        for dist in dist_map.get(top) or ([top] if _has_dist(top) else []):
            if dist in out:
                continue
            if dist not in _versions:
                try:
                    _versions[dist] = importlib.metadata.version(dist)
                except Exception:
                    _versions[dist] = "?"
            out[dist] = _versions[dist]
    return dict(sorted(out.items()))


#: Whether a name is a distribution's, for top-level modules no distribution lists.
_is_dist: dict[str, bool] = {}


def _has_dist(name: str) -> bool:
    found = _is_dist.get(name)
    if found is None:
        import importlib.metadata

        if name.startswith("_") or name in sys.builtin_module_names:
            found = False
        else:
            try:
                _versions[name] = importlib.metadata.version(name)
                found = True
            except importlib.metadata.PackageNotFoundError:
                found = False
        _is_dist[name] = found
    return found


#: Set to False to read /proc even when psutil is installed (tests use it).
_use_psutil = True


def _process() -> dict[str, object]:
    # /proc first where there is one: psutil reads the same files, but with more system calls,
    # and each lets a busy application thread hold the GIL for a switch interval (a report took
    # over a second that way next to a spinning thread).
    if _use_psutil and not os.path.isdir("/proc/self/task"):
        try:
            import importlib

            psutil = importlib.import_module("psutil")
        except ImportError:
            pass
        else:
            return _process_psutil(psutil)
    return _process_proc()


def _process_psutil(psutil: object) -> dict[str, object]:
    p = psutil.Process()  # type: ignore[attr-defined]
    info: dict[str, object] = {"source": "psutil", "pid": p.pid}
    calls: dict[str, Callable[[], object]] = {
        "ppid": p.ppid,
        "user": p.username,
        "cmdline": p.cmdline,
        "cpu_times": lambda: p.cpu_times()._asdict(),
        "rss": lambda: p.memory_info().rss,
        "num_threads": p.num_threads,
        "open_files": lambda: [f.path for f in p.open_files()],
        "sockets": lambda: [
            {
                "fd": c.fd,
                "family": str(c.family.name),
                "type": str(c.type.name),
                "local": _addr(c.laddr),
                "remote": _addr(c.raddr),
                "status": c.status,
            }
            for c in (p.net_connections if hasattr(p, "net_connections") else p.connections)(
                kind="all"
            )
        ],
        "io": lambda: p.io_counters()._asdict(),
        "children": lambda: [
            {"pid": c.pid, "name": _or_none(c.name)} for c in p.children(recursive=True)
        ],
    }
    with p.oneshot():
        for key, call in calls.items():
            try:
                info[key] = call()
            except Exception as exc:
                info[key] = f"unavailable ({type(exc).__name__})"
    return info


def _or_none(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception:
        return None


def _addr(addr: object) -> str | None:
    if not addr:
        return None
    if isinstance(addr, tuple) and len(addr) == 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


#: Above this many threads, only the main thread's children are listed: each thread's list is a
#: file to read, and each read lets a busy application thread hold the GIL for a switch interval.
_CHILDREN_SCAN_LIMIT = 32
_user_names: dict[int, str] = {}


def _read(path: str) -> str:
    """A small file in one open, read, close (``open()`` makes twice as many system calls)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _process_proc() -> dict[str, object]:
    info: dict[str, object] = {"source": "/proc", "pid": os.getpid(), "ppid": os.getppid()}

    def user() -> object:
        uid = os.getuid()
        if uid not in _user_names:
            import pwd

            try:
                _user_names[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                _user_names[uid] = str(uid)
        return _user_names[uid]

    def cpu() -> object:
        t = os.times()
        return {
            "user": t.user,
            "system": t.system,
            "children_user": t.children_user,
            "children_system": t.children_system,
        }

    def fds() -> tuple[builtins.list[str], builtins.list[dict[str, object]]]:
        files: builtins.list[str] = []
        sockets: builtins.list[dict[str, object]] = []
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:
                continue  # closed meanwhile (the listing's own fd, for one)
            if target.startswith("socket:"):
                sockets.append({"fd": int(name), "inode": target[8:-1]})
            elif target.startswith("/"):
                files.append(target)
        return sorted(files), sockets

    def io() -> object:
        out: dict[str, int] = {}
        for line in _read("/proc/self/io").splitlines():
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
        return out

    tids = os.listdir("/proc/self/task")
    if len(tids) > _CHILDREN_SCAN_LIMIT:
        # One file per thread: with many threads, read the main thread's only (see the limit).
        info["children_of"] = "the main thread"
        tids = [str(os.getpid())]
    else:
        info["children_of"] = "all threads"

    def children() -> object:
        pids: builtins.list[dict[str, object]] = []
        for tid in tids:
            try:
                text = _read(f"/proc/self/task/{tid}/children")
            except OSError:
                continue
            for pid in text.split():
                try:
                    name: str | None = _read(f"/proc/{pid}/comm").strip()
                except OSError:
                    name = None
                pids.append({"pid": int(pid), "name": name})
        return pids

    calls: dict[str, Callable[[], object]] = {
        "user": user,
        "cmdline": lambda: _read("/proc/self/cmdline").rstrip("\0").split("\0"),
        "cpu_times": cpu,
        "rss": lambda: int(_read("/proc/self/statm").split()[1]) * os.sysconf("SC_PAGE_SIZE"),
        "num_threads": lambda: len(os.listdir("/proc/self/task")),
        "io": io,
        "children": children,
    }
    for key, call in calls.items():
        try:
            info[key] = call()
        except Exception as exc:
            info[key] = f"unavailable ({type(exc).__name__})"
    try:
        info["open_files"], info["sockets"] = fds()
    except OSError as exc:
        info["open_files"] = info["sockets"] = f"unavailable ({type(exc).__name__})"
    return info


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


# --- rendering ---------------------------------------------------------------------------------


def generate(fmt: Format = "text", *, title: str = "report on demand") -> str:
    """A report of this process now, as ``"text"`` or ``"json"`` (no file is written)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"fmt must be 'text' or 'json', not {fmt!r}")
    data = _collect(title=title, raw=None, skip=())
    return _render_json(data) if fmt == "json" else _render_text(data)


def _render_json(data: Mapping[str, object]) -> str:
    import json

    # No indent: only the compact form uses the C encoder (5x faster on large reports). Lists
    # are encoded item by item, so that the application's threads can take the GIL in between
    # (one call for 1000 threads holds it for ~10 ms).
    parts = []
    for key, value in data.items():
        if isinstance(value, builtins.list):
            items = ",".join(json.dumps(item, default=repr) for item in value)
            parts.append(f"{json.dumps(key)}:[{items}]")
        else:
            parts.append(f"{json.dumps(key)}:{json.dumps(value, default=repr)}")
    return "{" + ",".join(parts) + "}\n"


def _render_text(data: Mapping[str, object]) -> str:
    out = [
        f"heartline: {data['title']}",
        f"pid {data['pid']}, {data['time']}",
        "",
    ]
    threads = _seq(data.get("threads"))
    out.append(f"== Threads ({len(threads)}) ==")
    for t in threads:
        daemon = " (daemon)" if t.get("daemon") else ""
        main = " (main)" if t.get("main") else ""
        name = repr(t["name"]) if t.get("name") is not None else "<unknown>"
        out.append(
            f"Thread {name}{daemon}{main} (ident {t['ident']:#018x}, native id {t['native_id']})"
        )
        out.append("Stack (most recent call last):")
        out.extend(_frames_text(t.get("stack")))
        out.append("")
    loops = _seq(data.get("asyncio"))
    out.append(f"== asyncio ({len(loops)} loops) ==")
    for lp in loops:
        state = "running" if lp.get("running") else "not running"
        tasks = _seq(lp.get("tasks"))
        out.append(f"Loop {lp['loop']} ({state}): {len(tasks)} tasks")
        if lp.get("error"):
            out.append(f"  tasks {lp['error']}")
        for task in tasks:
            note = "  <-- running now" if task.get("current") else ""
            out.append(f"Task {task['name']!r} coroutine {task['coroutine']}(){note}")
            if task.get("stack"):
                out.append("Await chain (most recent call last):")
                out.extend(_frames_text(task.get("stack")))
            if task.get("waiting_for"):
                out.append(f"  waiting for {task['waiting_for']}")
        out.append("")
    greenlets = data.get("greenlets")
    if greenlets is None:
        out += ["== Greenlets: none (neither gevent nor eventlet is imported) ==", ""]
    else:
        glist = _seq(greenlets)
        out.append(f"== Greenlets ({len(glist)} suspended) ==")
        for g in glist:
            out.append(f"Greenlet {g['name']}")
            out.extend(_frames_text(g.get("stack")))
        out.append("")
    out.append("== Process ==")
    out.extend(_mapping_text(data.get("process")))
    out += ["", "== Packages =="]
    packages = data.get("packages")
    if isinstance(packages, dict):
        out.extend(f"{name} {version}" for name, version in packages.items())
    out += ["", "== Configuration =="]
    out.extend(_mapping_text(data.get("config")))
    out += ["", "== Environment =="]
    env = data.get("environment")
    if isinstance(env, dict):
        out.extend(f"{k}={v}" for k, v in sorted(env.items()))
    errors = data.get("errors")
    if errors:
        out += ["", "== Sections that failed =="]
        out.extend(_mapping_text(errors))
    raw = data.get("raw")
    if raw:
        out += ["", "== Raw dump at the signal (faulthandler, most recent call first) ==", str(raw)]
    return "\n".join(out).rstrip("\n") + "\n"


def _seq(value: object) -> builtins.list[dict[str, object]]:
    if not isinstance(value, builtins.list):
        return []
    return [v for v in value if isinstance(v, dict)]


def _frames_text(frames: object) -> builtins.list[str]:
    out = []
    for f in _seq(frames):
        out.append(f'  File "{f["file"]}", line {f["line"]}, in {f["function"]}')
        if f.get("code"):
            out.append(f"    {f['code']}")
    return out


def _mapping_text(value: object, indent: str = "") -> builtins.list[str]:
    if not isinstance(value, dict):
        return [f"{indent}{value}"]
    out = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            out.append(f"{indent}{key}:")
            out.extend(_mapping_text(item, indent + "  "))
        elif isinstance(item, builtins.list) and item and isinstance(item[0], dict):
            out.append(f"{indent}{key}:")
            out.extend(f"{indent}  - {_inline(v)}" for v in item)
        else:
            out.append(f"{indent}{key}: {_inline(item)}")
    return out


def _inline(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items())
    if isinstance(value, builtins.list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return str(value)


# --- files -------------------------------------------------------------------------------------


def default_directory() -> str:
    """Where reports go when install() is not told (see the module's notes)."""
    explicit = os.environ.get("HEARTLINE_REPORT_DIR")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        root = runtime
    else:
        root = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(root, "heartline", "reports", _program_name())


def _program_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    name = os.path.basename(argv0)
    if name.endswith(".py"):
        name = name[:-3]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "python"


def _make_directory(path: str) -> None:
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # whatever the umask says


class StoredReport:
    """A report on disk: ``path`` (the text), ``json_path`` (None if it is missing), ``pid``
    of the process it describes and ``time`` (seconds since the epoch, UTC)."""

    __slots__ = ("json_path", "path", "pid", "time")

    def __init__(self, path: str, json_path: str | None, pid: int, time: float) -> None:
        self.path = path
        self.json_path = json_path
        self.pid = pid
        self.time = time

    def read_text(self) -> str:
        """The text report."""
        with open(self.path, encoding="utf-8") as f:
            return f.read()

    def read_json(self) -> dict[str, object]:
        """The JSON report, parsed (raises FileNotFoundError when there is none)."""
        import json

        if self.json_path is None:
            raise FileNotFoundError(f"no JSON report next to {self.path}")
        with open(self.json_path, encoding="utf-8") as f:
            data: dict[str, object] = json.load(f)
        return data

    def __repr__(self) -> str:
        return f"<StoredReport {self.path!r} pid={self.pid}>"


def list(directory: str | os.PathLike[str] | None = None) -> builtins.list[StoredReport]:
    """The reports in ``directory`` (default: :func:`default_directory`), newest first; an empty
    list when the directory does not exist."""
    import calendar

    path = os.fspath(directory) if directory is not None else default_directory()
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _REPORT_NAME.match(name)
        if m is None:
            continue
        stamp, pid = m.group(1), int(m.group(2))
        seconds = calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S"))
        when = seconds + int(stamp[16:22]) / 1e6
        json_name = name[:-4] + ".json"
        json_path = os.path.join(path, json_name) if json_name in names else None
        found.append(StoredReport(os.path.join(path, name), json_path, pid, when))
    found.sort(key=lambda r: (r.time, r.pid), reverse=True)
    return found


def latest(directory: str | os.PathLike[str] | None = None) -> StoredReport | None:
    """The newest report in ``directory``, or None."""
    reports = list(directory)
    return reports[0] if reports else None


def _write_files(directory: str, data: Mapping[str, object], keep: int) -> str:
    """Write ``data`` as a JSON and a text report (the text last: once it is there, the report is
    complete), delete all but the newest ``keep``; give the text's path."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    base = os.path.join(directory, f"report-{stamp}-{os.getpid()}")
    atomic_write(base + ".json", _render_json(data).encode(), mode=0o600, fsync=False)
    atomic_write(
        base + ".txt", _render_text(data).encode("utf-8", "backslashreplace"), mode=0o600,
        fsync=False,
    )  # fmt: skip
    _rotate(directory, keep)
    return base + ".txt"


def _rotate(directory: str, keep: int) -> None:
    names = os.listdir(directory)
    if sum(1 for n in names if n.startswith("report-") and n.endswith(".txt")) <= keep:
        return
    for old in list(directory)[keep:]:
        for path in (old.path, old.json_path):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue


# --- the signal --------------------------------------------------------------------------------


class _Installed:
    """The live installation: the signal, its previous handler, the raw file, the wake-ups and
    the helper thread."""

    def __init__(self, signum: int, previous: _Handler, directory: str, keep: int) -> None:
        self.signum = signum
        self.previous = previous
        self.directory = directory
        self.keep = keep
        self.pid = os.getpid()
        self.raw_path = os.path.join(directory, f"raw-{self.pid}.txt")
        self.raw_fd = os.open(
            self.raw_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.wake_w, False)
        self.notify_fd = _watch_file(self.raw_path)
        self.thread = threading.Thread(target=self._serve, name="heartline-reports", daemon=True)
        self.last_path: str | None = None
        self.written = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The Python-level half: runs in the main thread (after faulthandler's dump) and only
        # nudges the helper; the inotify watch on the raw file usually woke it already.
        # An OSError: the helper has a wake-up pending already (a full pipe), or is gone.
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"r")

    def _serve(self) -> None:
        import select

        try:
            # The slow parts of a first report, done while nothing waits: the imports, the
            # distributions and the source files the threads are in now (into linecache). An
            # import is dozens of system calls, each a chance for a busy thread to keep the GIL
            # for a switch interval: done during a report, they made it take a second.
            warm = _collect(title="warm-up", raw=None, skip=(threading.get_ident(),), config=False)
            _render_text(warm)
            _render_json(warm)
            list(self.directory)
        except Exception:
            _log().warning("heartline reports: cannot list distributions", exc_info=True)
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if self.notify_fd is not None:
            poller.register(self.notify_fd, select.POLLIN)
        while True:
            poller.poll()  # no timeout: asleep until a signal (or uninstall) comes
            if not _drain(self.wake_r, stop=b"q"):
                return
            if self.notify_fd is not None:
                _drain(self.notify_fd)
            raw = self._take_raw()
            if raw is None:
                continue  # this dump went into the previous report (or it was our truncation)
            # While the report is built, a busy app thread would keep the GIL for the whole
            # switch interval (5 ms) each time this thread makes a system call, and a report
            # makes a few dozen: shorten the interval for those few milliseconds only.
            # The report's many allocations would also set off a full garbage collection
            # (12 ms measured at 1000 threads) that stops every thread: hold it off until the
            # report is written.
            interval = sys.getswitchinterval()
            collecting = gc.isenabled()
            sys.setswitchinterval(min(interval, _REPORT_SWITCH_INTERVAL))
            gc.disable()
            try:
                self.last_path = self.write(raw)
                self.written += 1
            except Exception:
                _log().exception("heartline reports: writing a report failed")
            finally:
                if collecting:
                    gc.enable()
                sys.setswitchinterval(interval)

    def write(self, raw: str | None) -> str:
        signame = _signal.Signals(self.signum).name
        data = _collect(title=f"report on {signame}", raw=raw, skip=(threading.get_ident(),))
        try:
            return _write_files(self.directory, data, self.keep)
        except FileNotFoundError:  # someone removed the directory: make it again, once
            _make_directory(self.directory)
            return _write_files(self.directory, data, self.keep)

    def _take_raw(self) -> str | None:
        """What faulthandler wrote since the last report, once it stopped writing; the file is
        emptied for the next."""
        try:
            size = os.fstat(self.raw_fd).st_size
            if size == 0:
                return None
            # The dump is a series of writes: wait (a few ms) until it is complete.
            for _ in range(_SETTLE_STEPS):
                time.sleep(_SETTLE_STEP)
                now = os.fstat(self.raw_fd).st_size
                if now == size:
                    break
                size = now
            data = os.pread(self.raw_fd, size, 0)
            if os.fstat(self.raw_fd).st_size == len(data):
                os.ftruncate(self.raw_fd, 0)
        except OSError:
            return None
        return data.decode("utf-8", "backslashreplace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"q")
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(_JOIN_GRACE)
        self.close_fds()
        with contextlib.suppress(OSError):
            if os.path.getsize(self.raw_path) == 0:
                os.unlink(self.raw_path)

    def close_fds(self) -> None:
        for fd in (self.wake_w, self.wake_r, self.raw_fd, self.notify_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


#: How long the helper waits for faulthandler to finish a dump: steps of this many seconds ...
_SETTLE_STEP = 0.002
#: ... at most this many.
_SETTLE_STEPS = 100
_IN_MODIFY = 0x2


def _watch_file(path: str) -> int | None:
    """An inotify descriptor that becomes readable when ``path`` is written to, or None where
    inotify is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if int(libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY)) < 0:
        os.close(fd)
        return None
    return fd


def _drain(fd: int, *, stop: bytes = b"") -> bool:
    """Read what is there without blocking; False when ``stop`` was read or the other end
    closed."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data or (stop and stop in data):
            return False


class _Current:
    #: The installation of this process, if any; set and cleared under ``lock``.
    state: _Installed | None = None
    lock = threading.Lock()


def installed() -> bool:
    """True while reports are installed in this process."""
    return _Current.state is not None


def install(
    signal: int = _signal.SIGUSR2,
    *,
    directory: str | os.PathLike[str] | None = None,
    keep: int = 20,
    providers: Mapping[str, Provider] | None = None,
    force: bool = False,
) -> str:
    """Write a report to ``directory`` each time the process receives ``signal``; give the
    directory.

    Call it from the main thread. Raises :class:`SignalInUse` when the application already
    handles ``signal`` (unless ``force``), :class:`ReportsError` when reports are installed
    already. ``providers`` are :func:`register`-ed. The running event loop, if any, is listed
    in reports (others with :func:`register_loop`).
    """
    signum = int(signal)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep!r}")
    if threading.current_thread() is not threading.main_thread():
        raise ReportsError("reports.install() must be called from the main thread")
    with _Current.lock:
        if _Current.state is not None:
            raise ReportsError(
                f"reports are installed already (on {_signal.Signals(_Current.state.signum).name})"
            )
        previous = _signal.getsignal(signum)
        if previous not in (_signal.SIG_DFL, _signal.SIG_IGN) and not force:
            owner = "a handler not set from Python" if previous is None else repr(previous)
            raise SignalInUse(
                f"{_signal.Signals(signum).name} already has a handler ({owner}); "
                "pick another signal, or pass force=True to replace it",
                signum=signum,
            )
        path = os.path.abspath(
            os.fspath(directory) if directory is not None else default_directory()
        )
        _make_directory(path)
        state = _Installed(signum, previous, path, keep)
        try:
            state.thread.start()
            _signal.signal(signum, state.on_signal)
            faulthandler.register(signum, file=state.raw_fd, all_threads=False, chain=True)
        except BaseException:
            _signal.signal(signum, previous if previous is not None else _signal.SIG_DFL)
            state.close()
            raise
        _Current.state = state
    for name, provider in (providers or {}).items():
        register(name, provider)
    if "asyncio" in sys.modules:
        import asyncio

        with contextlib.suppress(RuntimeError):  # no loop runs here now
            register_loop(asyncio.get_running_loop())
    return path


def uninstall() -> None:
    """Stop writing reports: put back the signal's previous handler and stop the helper thread.
    Nothing happens when reports are not installed. Call it from the main thread."""
    with _Current.lock:
        state = _Current.state
        if state is None:
            return
        faulthandler.unregister(state.signum)
        previous = state.previous
        _signal.signal(state.signum, previous if previous is not None else _signal.SIG_DFL)
        _Current.state = None
    state.close()


def _after_fork_in_child() -> None:
    state = _Current.state
    if state is None:
        return
    _Current.state = None
    # The helper thread did not come along; the pipe and the raw file are the parent's.
    try:
        faulthandler.unregister(state.signum)
        previous = state.previous
        _signal.signal(state.signum, previous if previous is not None else _signal.SIG_DFL)
    except (ValueError, OSError, RuntimeError):
        pass
    state.close_fds()


def _at_exit() -> None:
    state = _Current.state
    if state is not None and state.pid == os.getpid():
        try:
            if os.path.getsize(state.raw_path) == 0:
                os.unlink(state.raw_path)
        except OSError:
            pass


def _log() -> Logger:
    import logging

    return logging.getLogger(__name__)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
