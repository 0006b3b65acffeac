"""Progress bars: tqdm on a terminal; elsewhere (a CI log, `| tee`) one plain line every few
seconds, because there a bar's carriage-return redraws run together into one long line."""
import sys

from tqdm import tqdm

__all__ = ["progress_bar", "PLAIN_SECONDS"]

PLAIN_SECONDS = 5.0
_PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) {elapsed} elapsed{postfix}"


def progress_bar(**options):
    """tqdm(**options) when its file (default stderr) is a terminal, else _PlainLines."""
    stream = options.get("file") or sys.stderr
    interactive = getattr(stream, "isatty", lambda: False)()
    return tqdm(**options) if interactive or options.get("disable") else _PlainLines(**options)


class _PlainLines(tqdm):
    """A tqdm that writes a whole line (no bar, no '\\r') at most every PLAIN_SECONDS, plus
    the first and the final count."""

    def __init__(self, **options):
        self._last_line = None
        options.update(mininterval=PLAIN_SECONDS, maxinterval=PLAIN_SECONDS, leave=False,
                       bar_format=_PLAIN_FORMAT)
        super().__init__(**options)

    def display(self, msg=None, pos=None):
        line = self.__str__() if msg is None else msg
        if line and line != self._last_line:
            self.fp.write(line + "\n")
            self.fp.flush()
            self._last_line = line
        return False              # nothing to erase: tqdm's close() then writes no '\r'

    def close(self):
        if not self.disable:
            self.display()        # the final count, even if the last line was recent
        super().close()
