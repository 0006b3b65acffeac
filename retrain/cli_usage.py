"""argparse in the tool's words: a mistake on the command line becomes a UsageError (one
`error:` line and a hint, printed by cli.main) naming the option, what is wrong and what to
do, with difflib's "did you mean --epochs?"; help shows defaults, except on flags. And
SIGTERM, which the CLI turns into Ctrl-C. (The options' types and checks are
options.OPTIONS'.)"""
import argparse
import contextlib
import difflib
import re
import signal
import textwrap
from pathlib import Path

from .errors import UsageError

__all__ = ["HelpFormatter", "Parser", "dask_address", "path_argument", "sigterm_as_ctrl_c"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except flags (a `(default: False)` on a
    switch says nothing), options without one (None) and helps that say it themselves. Lines break at spaces only, so that a path or a pip line shown in
    a help text (`pip install -e '/home/me/re-train[dask]'`) is never cut at a hyphen."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake raises UsageError (one `error:` line and a hint, printed by
    main) instead of printing the usage block and exiting."""

    def error(self, message):
        raise _usage_error(self, message)

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._commands().get(getattr(args, "command", None), self)
            raise _unknown_arguments(command, extras)
        return args

    def _commands(self):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices
        return {}


def _option_strings(parser):
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _unknown_arguments(parser, extras):
    options = [word for word in extras if word.startswith("-")]
    word = (options or extras)[0]
    help_hint = f"see `{parser.prog} --help`"
    if not options:
        return UsageError(f"{parser.prog}: unexpected argument {word!r}.",
                          hint=f"Quote a path that contains spaces; {help_hint}.")
    close = difflib.get_close_matches(word.split("=")[0], _option_strings(parser), n=1,
                                      cutoff=0.6)
    hint = f"did you mean {close[0]}? ({help_hint})" if close else f"{help_hint.capitalize()}."
    return UsageError(f"{parser.prog}: unknown option {word}.", hint=hint)


def _usage_error(parser, message):
    """argparse's message in the tool's words: which option, what is wrong, what to do."""
    see = f"see `{parser.prog} --help`"
    required = re.match(r"the following arguments are required: (.*)", message)
    if required:
        return UsageError(f"{parser.prog} needs {required.group(1)}.",
                          hint=f"For example: {_example(parser)} ({see}).")
    argument = re.match(r"argument ([^:]*): (.*)", message)
    if not argument:
        return UsageError(f"{parser.prog}: {message}.", hint=f"{see.capitalize()}.")
    name, problem = argument.group(1).split("/")[0], argument.group(2)
    action = next((a for a in parser._actions if name in a.option_strings
                   or name in (a.metavar, a.dest)), None)
    choice = re.match(r"invalid choice: '?([^']*)'? \(choose from (.*)\)", problem)
    if choice:
        value, allowed = choice.group(1), list(action.choices)
        close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
        what = "command" if name == "COMMAND" else name
        return UsageError(f"{parser.prog}: unknown {what} {value!r}.",
                          hint=(f"did you mean {close[0]}? " if close else "")
                          + f"Choose one of: {', '.join(allowed)} ({see}).")
    kind = re.match(r"invalid (\w+) value: '(.*)'", problem)
    if kind:
        wanted = {"float": "a number", "int": "a whole number"}.get(kind.group(1), kind.group(1))
        problem = f"must be {wanted}; got {kind.group(2)!r}"
    example = (f"For example {name} {action.default}; {see}."
               if action is not None and action.option_strings and action.default
               not in (None, argparse.SUPPRESS) else f"{see.capitalize()}.")
    return UsageError(f"{parser.prog}: {name} {problem}.", hint=example)


def _example(parser):
    words = [parser.prog]
    for action in parser._actions:
        if action.required and action.option_strings:
            words += [action.option_strings[0], action.metavar or action.dest.upper()]
        elif not action.option_strings and action.dest != "help":
            words.append(action.metavar or action.dest.upper())
    return " ".join(words)


def path_argument(text):
    """A path option: an empty one would mean the current folder (`--out ""` would make
    it the run folder), so it is refused."""
    if not text:
        raise argparse.ArgumentTypeError("must be a path; got an empty one")
    return Path(text)


def dask_address(text):
    """--dask: a scheduler's address (tcp://HOST:PORT; Dask itself checks it when it
    connects) or local:N, N worker processes on this machine."""
    if text.startswith("local:"):
        count = text[len("local:"):]
        if not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"local:N needs N, the number of worker "
                                             f"processes, 1 or more; got {text!r}")
    elif not text.strip():
        raise argparse.ArgumentTypeError("must be a scheduler address (tcp://HOST:8786) or "
                                         "local:N; got an empty one")
    return text


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (a CI timeout, `kill`) stops a run as Ctrl-C does, so finished work is saved."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:                       # not the main thread: leave signals alone
        previous = interrupt
    try:
        yield
    finally:
        if previous is not interrupt:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
