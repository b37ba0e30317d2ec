"""The `credentials:` setting of a target or discovery entry, declared for pydantic: keys and an
optional token (with an expiration), a credentials file and profile, or a CVM role; left out,
the environment's TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY. Made into the sources of
exporter.credentials. No error shows a value here, nor a key that is not one (a secret typed
in the wrong field, or where a key belongs, would be printed back). No state.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from exporter.config_values import MADE, LocalPath, Name, Text, checked_url, expand
from exporter.credentials import (
    DEFAULT_METADATA_ENDPOINT,
    DEFAULT_PROFILE,
    ENV_SECRET_ID,
    ENV_SECRET_KEY,
    ENV_SESSION_TOKEN,
    ISO_HINT,
    ROLE_NAME_RE,
    Credentials,
    CredentialsFile,
    CredentialSource,
    CVMRole,
    format_iso_time,
    from_environment,
    header_safe,
    parse_iso_time,
)
from exporter.yamlfile import FORBID, Shaped, problem, type_name

# The three forms of `credentials:`; a target's credentials use the keys of exactly one.
FORMS: tuple[tuple[str, ...], ...] = (
    ("secret_id", "secret_key", "token", "expiration"),
    ("file", "profile"),
    ("cvm_role", "metadata_endpoint"),
)


def _one_form_of_three(schema: dict[str, Any]) -> None:
    keys = schema["properties"]
    schema["oneOf"] = [
        {"properties": {k: keys[k] for k in form}, "required": list(form[: 1 + (i == 0)])}
        for i, form in enumerate(FORMS)
    ]


def _header_safe(text: str | None) -> str | None:
    if text and not header_safe(text):
        raise problem("must be printable ASCII without spaces (the value is not shown)")
    return text


def _expiration(value: object, info: ValidationInfo) -> float:
    if not isinstance(value, str):
        raise problem(f"expected {ISO_HINT}, got {type_name(value)}")
    expires = parse_iso_time(expand(value, info.context or {}))
    if expires is None:
        raise problem(f"is not {ISO_HINT} (the value is not shown)")
    # Static keys are never refreshed: expired ones would fail every request.
    if expires <= time.time():
        raise problem(f"temporary credentials expired at {format_iso_time(expires)}")
    return expires


Key = Annotated[Name, AfterValidator(_header_safe)]


def _readable(path: str) -> str:
    """A file that can be opened. It is not read here: its keys are checked each time it is
    read, and it may change before the first request. The path is not shown: a secret pasted
    into `file:` would be."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise problem(
            f"cannot read the file: {exc.strerror or type(exc).__name__}", "file"
        ) from None
    except ValueError:
        raise problem("cannot read the file: not a valid file name", "file") from None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        why = os.strerror(errno.EISDIR) if stat.S_ISDIR(mode) else "not a regular file"
        raise problem(f"cannot read the file: {why}", "file")
    return path


_PROFILE_RE = re.compile(r"[^\[\]\s](?:[^\[\]]*[^\[\]\s])?")


def _profile(name: str) -> str:
    if not name.isprintable() or not _PROFILE_RE.fullmatch(name):
        why = "is not a profile name (the name of a [section] of the file)"
        raise problem(f"{why} (the value is not shown)")
    return name


def _role(name: str) -> str | None:
    """The role's name; None (from `auto`, "" or nothing) asks the metadata service for it."""
    if name.strip() in ("", "auto"):
        return None
    if not ROLE_NAME_RE.fullmatch(name.strip()):
        raise problem(
            "is not a CAM role name (up to 128 letters, digits and +=,.@_-; or auto to ask "
            "the metadata service) (the value is not shown)"
        )
    return name.strip()


def _metadata_endpoint(text: str) -> str:
    parts = checked_url(text, "http(s)://host[:port]/path/", with_path=True)
    # Paths under it are appended: cam/security-credentials/<role>.
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


@with_config({**FORBID, "json_schema_extra": _one_form_of_three})
class CredentialKeys(TypedDict, total=False):
    secret_id: Key | None
    secret_key: Key | None
    token: Annotated[Text, AfterValidator(_header_safe)] | None
    expiration: Annotated[float, BeforeValidator(_expiration, json_schema_input_type=str)] | None
    file: LocalPath
    profile: Annotated[Name, AfterValidator(_profile)] | None
    cvm_role: Annotated[Text, AfterValidator(_role)] | None
    metadata_endpoint: Annotated[Name, AfterValidator(_metadata_endpoint)] | None


def _credentials(
    value: Any, validate: Callable[[Any], Any], info: ValidationInfo
) -> CredentialSource:
    if value is None:
        return _from_environment(info.context or {})
    named = (
        [next(k for k in value if k in f) for f in FORMS if set(f) & set(value)]
        if isinstance(value, dict)
        else []
    )
    if len(named) > 1:
        named.sort(key=list(value).index)  # the first key of each form, in the file's order
        listed = f"{', '.join(named[:-1])} and {named[-1]}"
        why = "give secret_id and secret_key, or a file, or a cvm_role"
        raise problem(f"{listed} cannot be used together ({why})")
    keys = validate(value)
    if "profile" in keys and "file" not in keys:
        raise problem("required when profile is given", "file")
    if "file" in keys:
        return CredentialsFile(_readable(keys["file"]), keys.get("profile") or DEFAULT_PROFILE)
    if "metadata_endpoint" in keys and "cvm_role" not in keys:
        why = "required when metadata_endpoint is given (auto asks the metadata service)"
        raise problem(why, "cvm_role")
    if "cvm_role" in keys:
        endpoint = keys.get("metadata_endpoint") or DEFAULT_METADATA_ENDPOINT
        return CVMRole(keys["cvm_role"], endpoint)
    secret_id, secret_key = keys.get("secret_id"), keys.get("secret_key")
    if secret_id is None and secret_key is None:
        raise problem(
            "give secret_id and secret_key, or a file, or a cvm_role, or leave credentials out "
            f"to use {ENV_SECRET_ID} and {ENV_SECRET_KEY}"
        )
    if secret_id is None or secret_key is None:
        given, missing = ("secret_key", "secret_id") if secret_id is None else FORMS[0][:2]
        raise problem(f"required when {given} is given", missing)
    # An empty token (e.g. `${TENCENTCLOUD_SESSION_TOKEN:-}`) means permanent keys.
    return Credentials(secret_id, secret_key, keys.get("token") or None, keys.get("expiration"))


def _from_environment(environ: Mapping[str, str]) -> Credentials:
    found = from_environment(environ)
    if found is None:
        has_id, has_key = bool(environ.get(ENV_SECRET_ID)), bool(environ.get(ENV_SECRET_KEY))
        if has_id != has_key:
            given, missing = (ENV_SECRET_ID, ENV_SECRET_KEY)[:: 1 if has_id else -1]
            raise problem(f"no credentials: {given} is set but {missing} is not")
        raise problem(
            f"no credentials: set {ENV_SECRET_ID} and {ENV_SECRET_KEY} (and {ENV_SESSION_TOKEN} "
            "for temporary keys) in the environment, or give secret_id and secret_key here"
        )
    for name, variable in zip(
        FORMS[0], (ENV_SECRET_ID, ENV_SECRET_KEY, ENV_SESSION_TOKEN), strict=False
    ):
        try:
            _header_safe(getattr(found, name))
        except PydanticCustomError as exc:
            raise problem(exc.message(), f" (from {variable})") from None
    return found


# A target's (or discovery entry's) credentials: made from the file's keys, or the environment.
CredentialsSetting = Annotated[CredentialSource, Shaped(CredentialKeys, _credentials), MADE]
