"""Operator parameters: read them, report every problem at once, reject unknown keys."""

from typing import List, Optional, Sequence, Set, Tuple

from .types import ConfigError


class Params:
    """``configure``'s parameters; read them through :meth:`reader`.

    >>> reader = Params([("alpha", "0.5")]).reader()
    >>> reader.number("alpha", 0.3, 0.0, 1.0)
    0.5
    >>> reader.finish()
    """

    def __init__(self, pairs: Sequence[Tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def get(self, key: str) -> Optional[str]:
        """The last value given for ``key``, if any."""
        value = None
        for k, v in self.pairs:
            if k == key:
                value = v
        return value

    def reader(self) -> "ParamReader":
        return ParamReader(self)


class ParamReader:
    """Reads typed values, collecting problems; :meth:`finish` raises them all.

    Every key the policy reads is known; :meth:`finish` rejects any other key
    with a message naming it and the known ones, so a typo is never ignored.
    """

    def __init__(self, params: Params) -> None:
        self._params = params
        self._known: List[str] = []
        self._problems: List[str] = []

    def _read(self, key: str) -> Optional[str]:
        self._known.append(key)
        return self._params.get(key)

    def number(self, key: str, default: float, low: float, high: float) -> float:
        """A number in ``low..=high`` (an int when the default is an int)."""
        text = self._read(key)
        if text is None:
            return default
        try:
            value = int(text) if isinstance(default, int) else float(text)
        except ValueError:
            kind = "an integer" if isinstance(default, int) else "a number"
            self._problems.append(f"{key}: expected {kind}, got '{text}'")
            return default
        if not low <= value <= high:  # also refuses NaN
            self._problems.append(f"{key}: must be between {low} and {high}, got {text}")
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        """``true`` or ``false``."""
        text = self._read(key)
        if text is None:
            return default
        if text in ("true", "false"):
            return text == "true"
        self._problems.append(f"{key}: expected true or false, got '{text}'")
        return default

    def text(self, key: str, default: str) -> str:
        text = self._read(key)
        return default if text is None else text

    def problem(self, message: str) -> None:
        """Adds a problem of the policy's own (e.g. two parameters that contradict)."""
        self._problems.append(message)

    def finish(self) -> None:
        """Raises :class:`ConfigError` naming every problem and unknown key."""
        known: Set[str] = set(self._known)
        problems = list(self._problems)
        listed = ", ".join(self._known) if self._known else "none"
        for key, _ in self._params.pairs:
            if key not in known:
                problems.append(f"unknown parameter '{key}' (known: {listed})")
                known.add(key)
        if problems:
            raise ConfigError("; ".join(problems))
