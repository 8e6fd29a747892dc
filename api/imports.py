"""Files users import: delivery spreadsheets as contractors keep them (CSV or XLSX, English or Chinese
headers), and lists of org units (CSV)."""

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from openpyxl import load_workbook

from api.spreadsheet import FORMULA_START, XLSX
from domain.errors import InvalidInput
from domain.orgs import OrgUnit
from domain.purchasing import DeliveryRow

HEADERS = {
    "case_id": "case_id", "案件编号": "case_id",
    "delivered_on": "delivered_on", "服务日期": "delivered_on",
    "units": "units", "数量": "units",
    "reference": "reference", "报告编号": "reference",
}
MAX_ROWS = 50_000
MAX_UNPACKED = 128 * 2**20  # bytes of what a workbook keeps beside its sheets, unpacked: strings of MAX_ROWS wide rows
ORG_COLUMNS = ("code", "name", "kind")
OLD_EXCEL = bytes.fromhex("d0cf11e0a1b11ae1")  # how a compound file (an .xls workbook) begins
WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")  # units as a cell may hold them; else the domain refuses the row
EXCEL_ROWS = 1_048_576  # the last row a sheet can have: a file claiming rows past it is padded up to it, no further
# Dates in the formats Excel set to Chinese (mainland) saves by number alone (年/月/日), which openpyxl
# does not know for dates: it would read the days as numbers (46364).
EAST_ASIAN_DATES = frozenset({27, 28, 29, 30, 31, 36, 50, 51, 52, 53, 54, 57, 58})
CELL_ERRORS = frozenset({"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA"})


def read_rows(content: bytes, filename_or_type: str) -> dict[int, DeliveryRow]:
    """The deliveries of a CSV or XLSX file by their row in it (the header is row 1; blank rows are
    skipped but keep their numbers, so that an answer points at the row the contractor sees);
    422 for a file that is neither or lacks a column."""
    if content.startswith(OLD_EXCEL):  # read as CSV it was "no case_id column", which told no one what to do
        raise InvalidInput("file", "is an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV")
    table = _xlsx(content) if content[:2] == b"PK" or filename_or_type.endswith(("xlsx", XLSX)) else _csv(content)
    header = next(table, None) or []
    columns = _columns(header)
    rows = {}
    for number, row in enumerate(table, start=2):
        if len(rows) == MAX_ROWS:
            raise InvalidInput("file", f"has more than {MAX_ROWS} rows; import them in parts")
        if any(c not in (None, "") for c in row):
            rows[number] = _row(row, columns)
    return rows


def read_org_units(content: bytes) -> dict[int, OrgUnit]:
    """The units of a CSV with columns code, name and kind, by their row in it (as read_rows numbers them)."""
    table = _csv(content)
    header = [str(title).strip().lower() for title in next(table, None) or []]
    for name in ORG_COLUMNS:
        if name not in header:
            raise InvalidInput("file", f"has no {name} column (headers: {', '.join(ORG_COLUMNS)})")
    code, name, kind = (header.index(c) for c in ORG_COLUMNS)
    units = {}
    for number, row in enumerate(table, start=2):
        if any(c.strip() for c in row):
            row += [""] * (len(header) - len(row))
            units[number] = OrgUnit(row[code].strip(), row[name], row[kind].strip())
    return units


def _csv(content: bytes) -> Iterator[list[Any]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = content.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise InvalidInput("file", "is not CSV text in UTF-8 or GB18030")
    reader = csv.reader(io.StringIO(text), strict=True)
    line, number, width = 0, 0, 0
    try:
        for record in reader:
            number += 1
            width = width or len(record)  # the header's
            if reader.line_num > line + 1 and _swallows_rows(record, width):
                raise InvalidInput("file", f"row {number} (lines {line + 1}-{reader.line_num}) holds whole rows in "
                                           "one quoted value: a quote (\") left open? A quote inside a value is "
                                           "written twice (\"\")")
            line = reader.line_num
            yield record
    except csv.Error as error:
        raise InvalidInput("file", f"row {number + 1} (from line {line + 1}) is not readable CSV: {error}") from None


def _swallows_rows(record: list[str], width: int) -> bool:
    """Whether a value over several lines holds a line as wide as a row (as many commas as the header
    has columns less one): the rows after a quote left open. A note with a line break (Alt+Enter in
    Excel or WPS), commas in it or not, is no such value."""
    return width > 1 and any(part.count(",") >= width - 1
                             for value in record if "\n" in value for part in value.split("\n")[1:])


def _xlsx(content: bytes) -> Iterator[list[Any]]:
    """Rows read as they are needed: a workbook is parsed only as far as the import goes, each row only
    as wide as the header's last known column. openpyxl reads the parts beside the sheets (the table
    of shared strings) whole, and pads every row to the width the sheet claims or the header reaches:
    a small file unpacking to a huge table, or claiming column XFD, held the server for minutes."""
    try:
        beside = sum(member.file_size for member in zipfile.ZipFile(io.BytesIO(content)).infolist()
                     if not member.filename.startswith("xl/worksheets/"))  # sheets are read as a stream
        if beside > MAX_UNPACKED:
            raise InvalidInput("file", f"unpacks to more than {MAX_UNPACKED // 2**20} MB beside its sheets "
                                       "(shared strings, styles); import it in parts")
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        # openpyxl's index of the cell styles that hold dates (a set; an empty dict in a book without styles)
        book._date_formats = {*book._date_formats,
                              *(i for i, style in enumerate(book._cell_styles) if style.numFmtId in EAST_ASIAN_DATES)}
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # rows as wide as their own cells, not as the sheet claims
        header = next(sheet.iter_rows(values_only=True), None)
        if header is None:
            return
        known = [i for i, title in enumerate(header) if _column_of(title)]
        width = known[-1] + 1 if known else 1  # a note far right of the titles widens nothing
        yield list(header[:width])
        for row in sheet.iter_rows(min_row=2, max_row=EXCEL_ROWS, max_col=width, values_only=True):
            yield list(row)
    except InvalidInput:
        raise
    except Exception:  # openpyxl raises many kinds for a damaged file, lazily, row by row
        raise InvalidInput("file", "is not a readable XLSX workbook") from None


def _column_of(title: Any) -> str | None:
    """The column a header title names (English or Chinese, any case), if any."""
    text = str(title or "").strip()
    return HEADERS.get(text.lower()) or HEADERS.get(text)


def _columns(header: list[Any]) -> dict[str, int]:
    found = {}
    for i, title in enumerate(header):
        name = _column_of(title)
        if name:
            found[name] = i
    for name in ("case_id", "delivered_on", "units", "reference"):
        if name not in found:
            raise InvalidInput("file", f"has no {name} column (headers may be case_id, delivered_on, units, "
                                       "reference or 案件编号, 服务日期, 数量, 报告编号)")
    return found


def _row(row: list[Any], columns: dict[str, int]) -> DeliveryRow:
    cell = {name: _unescaped(row[i]) if i < len(row) else None for name, i in columns.items()}
    day = cell["delivered_on"]
    units = cell["units"]
    if isinstance(units, float) and units.is_integer():
        units = int(units)
    elif isinstance(units, str) and WHOLE_NUMBER.fullmatch(units.strip()):
        units = int(units.strip())
    return DeliveryRow(
        case_id=_text(cell["case_id"]),
        delivered_on=day.date() if isinstance(day, datetime) else day if isinstance(day, date) else _text(day),
        units=units,
        reference=_text(cell["reference"]),
    )


def _unescaped(value: Any) -> Any:
    """A cell as sent before the CSV export kept it from reading as a formula (an apostrophe before
    it): a contractor's own export, imported back, names its deliveries by the references recorded."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def _text(value: Any) -> Any:
    """A cell as text: a number as written, a spreadsheet's error (#N/A) as no value; a cell of another
    kind (true, a time) as it is, for the domain to refuse."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value
    text = str(value).strip()
    return None if text in CELL_ERRORS else text
