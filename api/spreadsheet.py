"""Lists that users take to spreadsheets: JSON by default, CSV or XLSX on request."""

import csv
import io
from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response
from openpyxl import Workbook

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def tabular(items: list[dict[str, Any]], columns: Sequence[str], fmt: str, filename: str) -> Response:
    if fmt == "json":
        return JSONResponse({"items": items, "next_cursor": None})
    rows = [[item[c] for c in columns] for item in items]
    disposition = {"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'}
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
        return Response(("\ufeff" + out.getvalue()).encode(), media_type="text/csv; charset=utf-8",
                        headers=disposition)
    book = Workbook()
    sheet = book.active
    sheet.append(list(columns))
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return Response(out.getvalue(), media_type=XLSX, headers=disposition)
