"""One registry for everything chosen by name, and one "did you mean" for every unknown name.

Compression methods, speculative policies, conformity scores, tasks and prompt strategies are
each a :class:`Registry`: names in registration order, each mapped to its entry (a config class,
a config, a spec, a function). The entry carries the behaviour (a policy config builds its
policy, a score config computes its scores), so adding one is one new file that ends with one
``REGISTRY.register("name", entry)`` (see ``docs/extending.md``).

A lookup of an unknown name raises :class:`~surefast.errors.SurefastError` ``"unknown <kind>
'<name>'"`` with the hint ``"did you mean '<closest>'?"``, or, when no name is close,
``"choose from <every name>"``. Other name lookups (option names, plan keys) use the same
:func:`suggestion`, so every such hint reads the same.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, ValuesView
from typing import Generic, TypeVar

from surefast.errors import SurefastError

T = TypeVar("T")

CUTOFF = 0.6  # difflib's default similarity for a suggestion; short names (strategies, tasks) pass a lower one


def closest(name: str, known: Iterable[str], *, cutoff: float = CUTOFF) -> str | None:
    """The known name most like ``name`` (difflib's ratio at least ``cutoff``), or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def suggestion(name: str, known: Iterable[str], *, cutoff: float = CUTOFF, otherwise: str | None = None) -> str:
    """The hint for an unknown ``name``: ``"did you mean 'x'?"``, else ``otherwise`` or the list of known names."""
    names = list(known)
    close = closest(name, names, cutoff=cutoff)
    if close is not None:
        return f"did you mean {close!r}?"
    if otherwise is not None:
        return otherwise
    return f"choose from {', '.join(names)}" if names else "none is registered"


def dashed(name: str) -> str:
    """``" Static_Tree"`` -> ``"static-tree"``: method and policy names match whatever case and
    separator a user types (CLI flags use dashes, Python keywords underscores)."""
    return name.strip().lower().replace("_", "-")


def _same(name: str) -> str:
    return name


class Registry(Generic[T]):
    """Names -> entries of one ``kind`` ("compression method", "conformity score", ...).

    Reads like a read-only mapping (``name in r``, ``r[name]``, iteration over the names in
    registration order, ``items()``), except that a missing name raises
    :class:`~surefast.errors.SurefastError` with a suggestion instead of ``KeyError``.
    ``normalize`` maps what a user types to the registered spelling (e.g. :func:`dashed`);
    registered names must already be in that form, so every lookup goes through it.
    """

    def __init__(self, kind: str, *, normalize: Callable[[str], str] = _same, cutoff: float = CUTOFF) -> None:
        self.kind = kind
        self._normalize = normalize
        self._cutoff = cutoff
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; returns the entry. A name is registered once: a second
        registration is refused (it would silently replace the first, e.g. two plugins choosing
        one name)."""
        if not isinstance(name, str) or not name or self._normalize(name) != name:
            hint = f"write it as {self._normalize(name)!r}" if isinstance(name, str) and name else "a non-empty name"
            raise SurefastError(f"cannot register {self.kind} {name!r}: not a name lookups can find", hint)
        if name in self._entries:
            raise SurefastError(
                f"{self.kind} {name!r} is registered twice: {self._entries[name]!r} and {entry!r}",
                "give the new one another name",
            )
        self._entries[name] = entry
        return entry

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name`` (``"Static_Tree"`` -> ``"static-tree"``); unknown: see :meth:`get`."""
        key = self._normalize(name) if isinstance(name, str) else None
        if key is None or key not in self._entries:
            raise self.unknown(name)
        return key

    def get(self, name: str) -> T:
        """The entry registered under ``name``; an unknown name raises SurefastError with a suggestion."""
        return self._entries[self.canonical(name)]

    __getitem__ = get

    def unknown(self, name: object) -> SurefastError:
        """The error for a name that is not registered (for callers that raise it with more context)."""
        typed = self._normalize(name) if isinstance(name, str) else str(name)
        return SurefastError(f"unknown {self.kind} {name!r}", suggestion(typed, self._entries, cutoff=self._cutoff))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> KeysView[str]:
        return self._entries.keys()

    def values(self) -> ValuesView[T]:
        return self._entries.values()

    def items(self) -> ItemsView[str, T]:
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
