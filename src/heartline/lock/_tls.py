"""The TLS side of a lock client: the CA it checks servers against and, for etcd, the client
certificate it shows (etcd's ``--client-cert-auth``).

A client key is a secret as a token file is: it is read only while no other user can read or
change it (:func:`~heartline.lock._secret.check_private`), and checked on the very file that
is loaded (the checked descriptor is what OpenSSL reads, through ``/proc/self/fd``). Every
problem is one line naming the file and the fix: UsageError for a file that is missing,
unreadable or not what it should be, UnsafeTokenFile for a key open to others.
"""

from __future__ import annotations

import os
import ssl
import stat
from typing import NamedTuple

from heartline.errors import UnsafeTokenFile, UsageError
from heartline.lock._secret import check_private

#: Files naming the client certificate and its key when no option or config key does.
CERT_FILE_ENV = "HEARTLINE_LOCK_CERT_FILE"
KEY_FILE_ENV = "HEARTLINE_LOCK_KEY_FILE"

_CERT_FIX = "name the client's PEM certificate, signed by a CA the etcd members trust"
_KEY_FIX = "name the PEM private key of the client certificate"


class ClientCert(NamedTuple):
    """A client certificate and its key (``key`` None: the certificate's file holds it too);
    ``cert_from``/``key_from`` name the variable each came from ("" for an option or a config
    key), for messages."""

    cert: str
    key: str | None = None
    cert_from: str = ""
    key_from: str = ""


def client_cert(
    cert_file: str | None, key_file: str | None, *, scheme: str
) -> ClientCert | None:  # fmt: skip
    """The client certificate to use for a server URL of ``scheme``: the one given, else
    the one ``$HEARTLINE_LOCK_CERT_FILE``/``$HEARTLINE_LOCK_KEY_FILE`` name (for etcds://
    only). Given for a URL that takes none (lockd checks tokens; plain etcd:// has no TLS),
    it is refused with a line that says so; the variables are then left alone."""
    if (cert_file or key_file) and scheme != "etcds":
        if scheme.startswith("etcd"):
            raise UsageError(
                "a client certificate needs TLS: write the etcd URL as etcds://HOST:PORT"
            )
        raise UsageError(
            f"a client certificate is for etcds:// (etcd's --client-cert-auth); {scheme}:// "
            "(lockd) checks a token instead: give --token-file (or [cluster] token_file)"
        )
    if scheme != "etcds":
        return None
    cert_from = key_from = ""
    if not cert_file and (cert_file := os.environ.get(CERT_FILE_ENV) or None):
        cert_from = CERT_FILE_ENV
    if not key_file and (key_file := os.environ.get(KEY_FILE_ENV) or None):
        key_from = KEY_FILE_ENV
    if key_file and not cert_file:
        where = _where("client key", key_file, key_from)
        raise UsageError(
            f"{where}: no client certificate goes with it; give --cert-file (or [cluster] "
            f"cert_file, or ${CERT_FILE_ENV})"
        )
    if not cert_file:
        return None
    return ClientCert(cert_file, key_file, cert_from, key_from)


def _where(what: str, path: str, source: str) -> str:
    return f"{what} {path}" + (f" (from ${source})" if source else "")


def client_context(ca_file: str | None, cert: ClientCert | None = None) -> ssl.SSLContext:
    """A TLS client context checking servers against ``ca_file`` (None: the system's CAs)
    and showing ``cert``, if given."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(
            f"CA file {ca_file}: {why}; name the PEM file of the CA that signed the server's "
            "certificate"
        ) from None
    if cert is not None:
        _load(ctx, cert)
    return ctx


class _Encrypted(Exception):
    """OpenSSL asked for the key's passphrase."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def _load(ctx: ssl.SSLContext, cert: ClientCert) -> None:
    cert_where = _where("client certificate", cert.cert, cert.cert_from)
    cert_fd, cert_text = _open(cert.cert, cert_where, _CERT_FIX)
    key_fd = None
    try:
        if "-----BEGIN CERTIFICATE-----" not in cert_text:
            raise UsageError(f"{cert_where}: not a PEM certificate; {_CERT_FIX}")
        if cert.key is None:
            key_where = cert_where
            if "PRIVATE KEY-----" not in cert_text:
                raise UsageError(
                    f"{cert_where}: holds no private key; give its key with --key-file (or "
                    f"[cluster] key_file, or ${KEY_FILE_ENV})"
                )
            _check_key(cert.cert, cert_fd, cert_where)
            key_path = None
        else:
            key_where = _where("client key", cert.key, cert.key_from)
            key_fd, key_text = _open(cert.key, key_where, _KEY_FIX)
            if "PRIVATE KEY-----" not in key_text:
                raise UsageError(f"{key_where}: not a PEM private key; {_KEY_FIX}")
            _check_key(cert.key, key_fd, key_where)
            key_path = f"/proc/self/fd/{key_fd}"
        try:
            ctx.load_cert_chain(f"/proc/self/fd/{cert_fd}", key_path, password=_no_passphrase)
        except _Encrypted:
            raise UsageError(
                f"{key_where}: the key is encrypted (it has a passphrase); give an unencrypted "
                "copy (`openssl pkey -in KEY -out NEW`, then `chmod 600 NEW`)"
            ) from None
        except (OSError, ssl.SSLError) as e:
            if getattr(e, "reason", None) == "KEY_VALUES_MISMATCH":
                why = "the key is not the certificate's; give the key it was made with"
            else:
                why = f"cannot be used ({getattr(e, 'reason', None) or e}); {_CERT_FIX}"
            raise UsageError(f"{cert_where} with {key_where}: {why}") from None
    finally:
        os.close(cert_fd)
        if key_fd is not None:
            os.close(key_fd)


def _open(path: str, where: str, fix: str) -> tuple[int, str]:
    """A descriptor on ``path`` and its text (for the checks; OpenSSL reads the descriptor)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise UsageError(f"{where}: {e.strerror}; {fix}") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise UsageError(f"{where}: is a directory; {fix}")
        text = os.pread(fd, 1 << 20, 0).decode("ascii", "replace")
    except OSError as e:
        os.close(fd)
        raise UsageError(f"{where}: {e.strerror}; {fix}") from None
    except UsageError:
        os.close(fd)
        raise
    return fd, text


def _check_key(path: str, fd: int, where: str) -> None:
    try:
        check_private(path, os.fstat(fd), what="key")
    except UnsafeTokenFile as e:
        raise UnsafeTokenFile(f"{where}: {e}") from None


__all__ = ["CERT_FILE_ENV", "KEY_FILE_ENV", "ClientCert", "client_cert", "client_context"]
