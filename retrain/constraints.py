"""What an option's value may be, said in words for both of its surfaces, as scikit-learn's
`Interval` and `StrOptions`: `accepts(value)` for Python values, `parse(text)` for command-line
text (ValueError when the text is no such value), `words()` for the error messages of both.

>>> Integer(0, 100).words(), Integer(0, 100).accepts(101), Integer(0, 100).accepts(True)
('a whole number from 0 to 100', False, False)
>>> AnyOf((Literal("auto"), Number(0, open_low=True))).parse("auto")
'auto'
"""
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["AnyOf", "Constraint", "Flag", "Integer", "Literal", "Number", "OneOf", "Text"]


class Constraint:
    """`accepts(value)` for Python values, `parse(text)` for command-line text (ValueError
    when the text is no such value), `words()` for both surfaces' error messages."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def words(self, cli: bool = False) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Integer(Constraint):
    low: Optional[int] = None
    high: Optional[int] = None

    def accepts(self, value):
        return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                and (self.low is None or value >= self.low)
                and (self.high is None or value <= self.high))

    def parse(self, text):
        return int(text)

    def words(self, cli=False):
        if self.high is not None:
            return f"a whole number from {self.low:,} to {self.high:,}"
        return {None: "a whole number", 0: "a whole number (0 or more)",
                1: "a positive whole number"}.get(self.low, f"a whole number, {self.low} or more")


@dataclass(frozen=True)
class Number(Constraint):
    """A real number in [low, high], or (low, high] with `open_low`, [low, high) with
    `open_high`."""
    low: Optional[float] = None
    high: Optional[float] = None
    open_low: bool = False
    open_high: bool = False

    def accepts(self, value):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high
                                      else value <= self.high)
        return bool(above and below)

    def parse(self, text):
        return float(text)

    def words(self, cli=False):
        low = f"more than {self.low:g}" if self.open_low else f"from {self.low:g}"
        if self.high is None:
            return "a positive number" if (self.low, self.open_low) == (0, True) else (
                f"a number, {self.low:g} or more" if not self.open_low else f"a number {low}")
        if self.open_high:
            return f"a number {low} up to (not including) {self.high:,g}"
        return f"a number {low} and at most {self.high:,g}" if self.open_low else (
            f"a number {low} to {self.high:,g}")


@dataclass(frozen=True)
class Literal(Constraint):
    """One value: "auto", or None (which has no command-line spelling)."""
    value: Any
    meaning: str = ""

    def accepts(self, value):
        return value == self.value and type(value) is type(self.value)

    def parse(self, text):
        if self.value is None or type(self.value)(text) != self.value:
            raise ValueError(text)
        return self.value

    def words(self, cli=False):
        spelled = "None" if self.value is None else str(self.value)
        return f"{spelled} ({self.meaning})" if self.meaning else spelled


@dataclass(frozen=True)
class AnyOf(Constraint):
    choices: tuple

    def accepts(self, value):
        return any(c.accepts(value) for c in self.choices)

    def parse(self, text):
        parsed = []
        for choice in self.choices:
            try:
                parsed.append(choice.parse(text))
            except ValueError:
                continue
            if choice.accepts(parsed[-1]):
                return parsed[-1]
        if not parsed:
            raise ValueError(text)
        return parsed[0]           # a value of the right kind, out of range: "got 0"

    def words(self, cli=False):
        said = [c.words(cli) for c in self.choices
                if not (cli and isinstance(c, Literal) and c.value is None)]
        return said[0] if len(said) == 1 else ", ".join(said[:-1]) + " or " + said[-1]


@dataclass(frozen=True)
class OneOf(Constraint):
    """One of a few names (argparse's `choices`, with its "did you mean" on the CLI)."""
    names: tuple

    def accepts(self, value):
        return isinstance(value, str) and value in self.names

    def parse(self, text):
        return text

    def words(self, cli=False):
        return "one of " + ", ".join(self.names)


@dataclass(frozen=True)
class Flag(Constraint):
    def accepts(self, value):
        return isinstance(value, bool)

    def parse(self, text):
        raise ValueError(text)            # a switch: argparse's store_true/store_false

    def words(self, cli=False):
        return "true or false"


@dataclass(frozen=True)
class Text(Constraint):
    """A path or an address; the CLI refuses an empty one (`--out ""` would be here)."""
    noun: str = "a path"
    none_too: bool = True

    def accepts(self, value):
        return (value is None and self.none_too) or (
            isinstance(value, (str, Path)) and str(value) != "")

    def parse(self, text):
        if not text:
            raise ValueError(text)
        return Path(text) if self.noun == "a path" else text

    def words(self, cli=False):
        return self.noun
