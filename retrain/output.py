"""Text for terminals and for programs, whatever a file name or a model file holds.

* `printable`: for a terminal; control characters appear as escapes ('\\x1b'), so a label
  or a file name cannot clear the screen or retitle the window.
* `utf8`: valid UTF-8. A file name that is not UTF-8 reaches Python with its raw bytes as
  surrogates (os.fsdecode's surrogateescape); they are written as '\\xff' escapes
  (surrogateescape, then backslashreplace), as the README says.
* `json_line`: one line of valid JSON: non-finite numbers as null, strings as `utf8`.
* `csv_line`: one CSV record of `utf8` cells that every CSV reader splits as written.
"""
import csv
import io
import json
import math
import re

__all__ = ["CONTROL", "utf8", "printable", "json_ready", "json_line", "csv_line"]

# What a terminal obeys or reorders, printed as escapes: C0 controls but tab and newline,
# DEL, C1 controls (\x9b is CSI) and the bidirectional overrides (trojan-source).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def utf8(text):
    """Text that encodes as UTF-8: bytes of a non-UTF-8 file name (surrogateescape, as
    os.fsdecode gives them) become backslash escapes, '\\xff'."""
    try:
        raw = str(text).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:       # a lone surrogate from a model file's JSON
        raw = str(text).encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def printable(text):
    """Text for a terminal: valid UTF-8, control characters shown as escapes ('\\x1b')."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                       utf8(text))


def json_ready(value):
    """`value` with non-finite numbers as null and every string valid UTF-8."""
    if isinstance(value, dict):
        return {utf8(k) if isinstance(k, str) else k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return utf8(value) if isinstance(value, str) else value


def json_line(value):
    """One line of JSON; the controls json.dumps leaves raw (DEL, C1...) as \\u escapes."""
    text = json.dumps(json_ready(value), ensure_ascii=False, allow_nan=False)
    return CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def csv_line(cells):
    """csv quotes a cell holding "\\n" (its line terminator) but not one holding a lone
    "\\r", which readers take as a line break too: a record with one is fully quoted."""
    cells = [utf8(cell) for cell in cells]
    buffer = io.StringIO()
    quoting = csv.QUOTE_ALL if any("\r" in cell for cell in cells) else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator="\n", quoting=quoting).writerow(cells)
    return buffer.getvalue()
