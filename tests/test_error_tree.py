"""The error tree lives in one module, and its docstring draws every class in it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import providers.errors

# Kept outside on purpose (the docstring of providers.errors says why): Refused carries a
# handlers type; _CorruptError never leaves the state file's opening (daemon.state._connection);
# the emulator's errors are its own.
_OUTSIDE = {
    "handlers.validate.Refused",
    "daemon.state._connection._CorruptError",
    "providers.emulator.app._AbortedError",
}


def _exception_classes() -> set[str]:
    found: set[str] = set()
    for package in ("daemon", "handlers", "providers"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                ):
                    found.add(f"{module.__name__}.{name}")
    return found


def test_every_exception_class_is_in_providers_errors() -> None:
    """Every exception class of daemon/, handlers/ and providers/ is defined in providers.errors."""
    elsewhere = {name for name in _exception_classes() if not name.startswith("providers.errors.")}
    assert elsewhere == _OUTSIDE


def test_the_docstring_draws_every_class() -> None:
    """Each class in providers.errors appears in the tree of its docstring, and is exported."""
    doc = providers.errors.__doc__ or ""
    tree = doc[doc.index("InboxdError") : doc.index("\n\n", doc.index("InboxdError"))]
    classes = {
        name
        for name, value in vars(providers.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
        if value.__module__ == "providers.errors"
    }
    drawn = {line.split("── ")[-1].split()[0].split("(")[0] for line in tree.splitlines()}
    assert classes == drawn | {"InboxdError"}
    assert classes <= set(providers.errors.__all__)
