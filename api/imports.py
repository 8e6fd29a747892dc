"""Delivery spreadsheets as contractors keep them: CSV or XLSX, English or Chinese headers."""

import csv
import io
from datetime import date, datetime
from typing import Any

from openpyxl import load_workbook

from domain.errors import InvalidInput
from domain.purchasing import DeliveryRow

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADERS = {
    "case_id": "case_id", "案件编号": "case_id",
    "delivered_on": "delivered_on", "服务日期": "delivered_on",
    "units": "units", "数量": "units",
    "reference": "reference", "报告编号": "reference",
}
MAX_ROWS = 50_000


def read_rows(content: bytes, filename_or_type: str) -> list[DeliveryRow]:
    """The rows of a CSV or XLSX file; 422 for a file that is neither or lacks a column."""
    if content[:2] == b"PK" or filename_or_type.endswith(("xlsx", XLSX)):
        table = _xlsx(content)
    else:
        table = _csv(content)
    header, *body = table or [[]]
    columns = _columns(header)
    if len(body) > MAX_ROWS:
        raise InvalidInput("file", f"has {len(body)} rows; at most {MAX_ROWS} in one import")
    return [_row(row, columns) for row in body if any(c not in (None, "") for c in row)]


def _csv(content: bytes) -> list[list[Any]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = content.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise InvalidInput("file", "is not CSV text in UTF-8 or GB18030")
    try:
        return [row for row in csv.reader(io.StringIO(text))]
    except csv.Error as error:
        raise InvalidInput("file", f"is not readable CSV ({error})") from None


def _xlsx(content: bytes) -> list[list[Any]]:
    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds for a damaged file
        raise InvalidInput("file", "is not a readable XLSX workbook") from None
    sheet = book.worksheets[0]
    return [list(row) for row in sheet.iter_rows(values_only=True)]


def _columns(header: list[Any]) -> dict[str, int]:
    found = {}
    for i, title in enumerate(header):
        name = HEADERS.get(str(title or "").strip().lower()) or HEADERS.get(str(title or "").strip())
        if name:
            found[name] = i
    for name in ("case_id", "delivered_on", "units", "reference"):
        if name not in found:
            raise InvalidInput("file", f"has no {name} column (headers may be case_id, delivered_on, units, "
                                       "reference or 案件编号, 服务日期, 数量, 报告编号)")
    return found


def _row(row: list[Any], columns: dict[str, int]) -> DeliveryRow:
    cell = {name: row[i] if i < len(row) else None for name, i in columns.items()}
    day = cell["delivered_on"]
    units = cell["units"]
    if isinstance(units, float) and units.is_integer():
        units = int(units)
    elif isinstance(units, str) and units.strip().isdigit():
        units = int(units.strip())
    return DeliveryRow(
        case_id=_text(cell["case_id"]),
        delivered_on=day.date() if isinstance(day, datetime) else day if isinstance(day, date) else _text(day),
        units=units,
        reference=_text(cell["reference"]),
    )


def _text(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return None if value is None else str(value).strip()
