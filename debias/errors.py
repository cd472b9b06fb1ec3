"""User-facing errors: one line that names the file or value and the fix; command lines exit 2."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, NoReturn, TypeVar

F = TypeVar("F", bound=Callable)

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad input or configuration. The message is one line: what is wrong, where, and how to fix it."""

    def __str__(self) -> str:  # keep the promise of one line even if a caller passes newlines
        return " ".join(super().__str__().split())


def exit_on_user_error(main: F) -> F:
    """Wrap a command-line entry point: a UserError prints `error: ...` on stderr and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors follow the same rule: one `error:` line naming the
    argument and where the options are listed, exit 2 (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
