"""One line for each problem pydantic finds in the settings: the key path, what is wrong, the fix
(what ``load_settings`` puts in its ``ConfigError``)."""

from __future__ import annotations

from typing import Any

__all__ = ["describe"]

_TYPE_WORDS = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "path_type": "a path",
}


def describe(err: Any) -> str:
    """One line for one pydantic error: the key path, what is wrong, and the fix."""
    parts: list[str] = []
    for loc in err["loc"]:
        if isinstance(loc, int):
            parts[-1:] = [f"{parts[-1]}[{loc}]"] if parts else [f"[{loc}]"]
        else:
            parts.append(str(loc))
    key = ".".join(parts) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        return (
            f"{key}: unknown key; remove it or fix its spelling "
            "(config.example.toml lists every key)"
        )
    if kind == "secret_in_config":  # the value is a secret: never echoed
        return f"{key}: {err['msg']}"
    if kind == "missing":
        return f"{key}: missing; set it (config.example.toml shows an example)"
    if kind in _TYPE_WORDS:
        return f"{key}: expected {_TYPE_WORDS[kind]}, got {err.get('input')!r}; fix its value"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{key}: {err.get('input')!r} is not allowed; use one of {allowed}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{key}: {msg} (got {err.get('input')!r}); fix its value"
