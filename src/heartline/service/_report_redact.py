"""What a report hides: :func:`redact` and the rules that find secrets in names and in text.

Part of :mod:`heartline.service.reports` (which re-exports :func:`redact` and :data:`REDACTED`):
every section of a report that shows the application's values goes through :func:`redact`.
"""

from __future__ import annotations

import re

#: Not typing.TYPE_CHECKING: importing typing would add ~10 ms to every user's start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: What a secret value is replaced with.
REDACTED = "***"


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
            items = list(value.items())
        except Exception:
            return _scrub_plain(value)
        out: dict[str, object] = {}
        for k, v in items:
            name = _scrub(str(k))
            out[name] = redact(v, key=name)
        return out
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return [_scrub(value[0]), redact(value[1], key=value[0])]
    if isinstance(value, (list, tuple, set, frozenset)):
        return _redact_items(value)
    return _scrub_plain(value)


def _redact_items(items: Iterable[object]) -> list[object]:
    out: list[object] = []
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
    out: list[str] = []
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
