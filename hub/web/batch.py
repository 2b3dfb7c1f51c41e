"""Sending a batch from a CSV file (``/web/batch``): one message per row, with the PDFs the rows name.

All or nothing: every row is checked first, as ``compose`` reads a form and as the intake would
(signed with the institution's self-service key, then ``Intake.open``: signature, schema, business
rules, the sender's rights). When any row is wrong nothing is sent, and the page lists each
problem by row and column so the user fixes the file and uploads it again. When every row is right,
they go to ``Intake.submit_many`` together (door ``web-batch``) and the page links each row to its
message.

The same file uploaded twice (a double click, the browser sending the form again, an upload
repeated after a lost answer) does not send twice: each row's sender message id derives from the
institution, the CSV and the PDFs (``web-batch-<digest>-<row>``), and a file already sent is refused.

The CSV is read defensively: at most ``[web] max_batch_rows`` rows and a size limit, UTF-8 text
only (a workbook, UTF-16 or a binary file is refused with what to do instead), comma or semicolon,
a header with the form's field names (an unknown column is named in the error), and cells
echoed back only through ``shown`` (no control characters, no formula a spreadsheet would run).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from starlette.datastructures import UploadFile
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.errors import ErrorCode, Rejected
from hub.inbound.acceptance import Receipt
from hub.inbound.senders import Institution, SelfService
from hub.runtime import Runtime
from hub.store.models import Message
from hub.web.app import Ctx, Web, _run, page
from hub.web.compose import LANGS, FormErrors, Upload, compose
from hub.web.sending import self_service_of, sign_for

log = logging.getLogger("hub.web")

COLUMNS: tuple[str, ...] = (
    "recipient_kind",
    "recipient_id",
    "message_type",
    *(f"subject_{lang}" for lang in LANGS),
    *(f"body_{lang}" for lang in LANGS),
    "registered",
    "expires_on",
    "payment_iban",
    "payment_amount",
    "payment_due_date",
    "payment_reference",
    "reply",
    "reply_deadline",
    "reply_choices",
    "your_reference",
    "document",
)
"""The columns a batch CSV may have: the self-service form's fields, and ``document`` (an uploaded PDF's name)."""
REQUIRED = ("recipient_id", "message_type")
DATE_COLUMNS = ("expires_on", "payment_due_date", "reply_deadline")
CSV_ROW_BYTES = 128 * 1024
"""The CSV may be this many bytes per allowed row (four full bodies in any script fit)."""
MAX_FILES = 1001
"""Files one upload may carry (the CSV and the PDFs): settings allow at most 1,000 rows; the real limit,
``[web] max_batch_rows`` PDFs, is checked on the form."""
FORM_SLACK = 64 * 1024
"""The form's fields and the multipart framing, beyond the files."""
YES = frozenset({"1", "true", "yes", "y", "x", "on", "oui", "ja", "vrai", "waar"})
NO = frozenset({"", "0", "false", "no", "n", "off", "non", "nee", "faux", "onwaar"})
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_LOCAL_DATE = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")
_SIGNATURES = {
    b"PK\x03\x04": "batch.error.workbook",  # .xlsx, .ods (zip)
    b"\xd0\xcf\x11\xe0": "batch.error.workbook",  # .xls (OLE)
    b"\xff\xfe": "batch.error.utf16",
    b"\xfe\xff": "batch.error.utf16",
    b"%PDF-": "batch.error.not_text",
}


def csv_limit(settings: object) -> int:
    return int(settings.web_max_batch_rows) * CSV_ROW_BYTES  # type: ignore[attr-defined]


def form_limit(web: Web) -> int:
    """The largest upload: a PDF per row and the CSV, never more than ``[limits] max_batch_bytes``."""
    settings = web.settings
    files = settings.web_max_batch_rows * settings.web_max_pdf_bytes + csv_limit(settings) + FORM_SLACK
    return int(min(files, settings.max_batch_bytes))


def shown(value: str, limit: int = 80) -> str:
    """A value of the user's file, safe to show again: no control or invisible characters, short, and never
    a formula (``=``, ``+``, ``-``, ``@`` first: what a spreadsheet would run if the page were pasted into one)."""
    text = _HIDDEN.sub("\N{REPLACEMENT CHARACTER}", value.strip())
    text = text[:limit] + ("…" if len(text) > limit else "")
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


# -- the outcome of a check ---------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something wrong: ``row`` is the spreadsheet's row (the header is row 1; 0: the file itself)."""

    row: int
    column: str
    key: str
    values: Mapping[str, object] = field(default_factory=dict)
    code: str = ""
    """An intake refusal's code (``message`` then holds its text, in English)."""
    message: str = ""


class BatchRefused(Exception):
    """The file cannot be read at all (not text, too big, no header...): nothing past it is checked."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.problem = Problem(0, "", key, values)


@dataclass
class Row:
    number: int
    cells: dict[str, str]
    signed: bytes | None = None
    summary: str = ""
    """The subject and the user's reference: how the result page names the row (no national number)."""


@dataclass
class Checked:
    rows: list[Row]
    problems: list[Problem]
    unreferenced: list[str]
    digest: str


# -- reading the CSV ------------------------------------------------------------------------------


def decode(raw: bytes) -> str:
    """The CSV's text: UTF-8 (a BOM is dropped), else ``BatchRefused`` saying what the file is instead."""
    for signature, key in _SIGNATURES.items():
        if raw.startswith(signature):
            raise BatchRefused(key)
    if b"\x00" in raw:
        raise BatchRefused("batch.error.not_text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchRefused("batch.error.not_utf8", line=raw[: exc.start].count(b"\n") + 1) from None
    return text.removeprefix("\ufeff")


def read_rows(raw: bytes, *, max_rows: int, max_bytes: int) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's column names and the rows that are not empty, each with its spreadsheet row number."""
    if not raw.strip():
        raise BatchRefused("batch.error.empty")
    if len(raw) > max_bytes:
        raise BatchRefused("batch.error.csv_too_big", limit=max_bytes // 1024)
    text = decode(raw)
    first = text.split("\n", 1)[0]
    if first.count(";") + first.count(",") == 0:
        raise BatchRefused("batch.error.separator")
    separator = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True)
    records: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    number = 0
    try:
        for record in reader:
            number += 1
            if header is None:
                header = [name.strip().lower().removeprefix("\ufeff") for name in record]
                continue
            if not any(cell.strip() for cell in record):
                continue  # an empty line (a spreadsheet's trailing rows)
            if len(records) == max_rows:
                raise BatchRefused("batch.error.too_many_rows", limit=max_rows)
            records.append((number, record))
    except csv.Error as exc:
        raise BatchRefused("batch.error.unreadable", line=reader.line_num, reason=shown(str(exc))) from None
    assert header is not None
    unknown = [shown(name, 40) for name in header if name and name not in COLUMNS]
    if unknown:
        raise BatchRefused("batch.error.unknown_columns", columns=", ".join(unknown[:10]), known=", ".join(COLUMNS))
    named = [name for name in header if name]
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        raise BatchRefused("batch.error.duplicate_columns", columns=", ".join(twice))
    missing = [name for name in REQUIRED if name not in named]
    if missing:
        raise BatchRefused("batch.error.missing_columns", columns=", ".join(missing))
    if not records:
        raise BatchRefused("batch.error.no_rows")
    return header, records


def _iso_day(value: str) -> str:
    """``31/12/2026`` (as a Belgian spreadsheet saves a date) as ``2026-12-31``; any other text unchanged."""
    local = _LOCAL_DATE.fullmatch(value)
    return f"{local.group(3)}-{int(local.group(2)):02d}-{int(local.group(1)):02d}" if local else value


def cells_of(number: int, header: Sequence[str], record: Sequence[str], problems: list[Problem]) -> dict[str, str]:
    """A row's cells by column, as ``compose`` reads a form; what cannot be one, in ``problems``."""
    cells: dict[str, str] = {}
    for index, value in enumerate(record):
        name = header[index] if index < len(header) else ""
        if not name:
            if value.strip():
                problems.append(Problem(number, "", "batch.error.extra_cell", {"position": index + 1}))
            continue
        value = value.strip()
        if _NOT_XML.search(value):
            problems.append(Problem(number, name, "batch.error.characters"))
            continue
        if name in ("recipient_kind", "reply"):
            value = value.lower()
        elif name == "registered":
            flag = value.lower()
            if flag not in YES | NO:
                problems.append(Problem(number, name, "batch.error.yes_no"))
            value = "yes" if flag in YES else ""
        elif name in DATE_COLUMNS:
            value = _iso_day(value)
        elif name == "reply_choices":
            value = "\n".join(part.strip() for part in re.split(r"[|\n]", value))
        if value:
            cells[name] = value
    return cells


def upload_key(name: str) -> str:
    """How a ``document`` cell finds its upload: the file name without any folder, case ignored."""
    return name.replace("\\", "/").rsplit("/", 1)[-1].strip().casefold()


# -- checking every row ----------------------------------------------------------------------------


def batch_digest(institution: str, raw: bytes, uploads: Sequence[Upload]) -> str:
    """What identifies an upload: the institution, the CSV and the PDFs (names and contents)."""
    digest = hashlib.sha256(institution.encode() + b"\0" + hashlib.sha256(raw).digest())
    for upload in sorted(uploads, key=lambda u: (u.file_name, u.content)):
        digest.update(upload.file_name.encode("utf-8", "replace") + b"\0" + hashlib.sha256(upload.content).digest())
    return digest.hexdigest()[:32]


def sender_message_id(digest: str, row: int) -> str:
    return f"web-batch-{digest}-{row}"


def check(
    runtime: Runtime,
    raw: bytes | None,
    uploads: Sequence[Upload],
    *,
    institution: Institution,
    service: SelfService,
    now: datetime,
) -> Checked:
    """Every row composed, signed and opened by the intake; the problems of all of them."""
    settings = runtime.settings
    max_rows, max_pdf = settings.web_max_batch_rows, settings.web_max_pdf_bytes
    problems: list[Problem] = []
    digest = batch_digest(institution.id, raw or b"", uploads)
    by_key: dict[str, Upload] = {}
    for upload in uploads:
        key = upload_key(upload.file_name)
        if key in by_key:
            problems.append(Problem(0, "document", "batch.error.same_name", {"name": shown(upload.file_name)}))
        by_key[key] = upload
    if len(uploads) > max_rows:
        problems.append(
            Problem(0, "document", "batch.error.too_many_files", {"count": len(uploads), "limit": max_rows})
        )
    if raw is None:
        return Checked([], [Problem(0, "", "batch.error.no_csv"), *problems], [], digest)
    try:
        header, records = read_rows(raw, max_rows=max_rows, max_bytes=csv_limit(settings))
    except BatchRefused as refused:
        return Checked([], [refused.problem, *problems], [], digest)

    rows: list[Row] = []
    referenced: set[str] = set()
    for number, record in records:
        row_problems: list[Problem] = []
        cells = cells_of(number, header, record, row_problems)
        document = None
        name = cells.pop("document", "")
        if name:
            key = upload_key(name)
            referenced.add(key)
            document = by_key.get(key)
            if document is None:
                row_problems.append(Problem(number, "document", "batch.error.document_missing", {"name": shown(name)}))
        row = Row(number, cells, summary=shown(_summary(cells)))
        rows.append(row)
        problems.extend(row_problems)
        try:  # composed even with problems already found: the user then sees all of the row's at once
            envelope = compose(
                cells,
                document,
                institution=institution,
                application=service.application,
                sender_message_id=sender_message_id(digest, number),
                now=now,
                max_pdf_bytes=max_pdf,
            )
        except FormErrors as wrong:
            flagged = {p.column for p in row_problems}
            problems.extend(
                Problem(number, column, key, values)
                for column, (key, values) in wrong.errors.items()
                if column not in flagged and not (column == "document" and "document" in flagged)
            )
            continue
        if row_problems:
            continue
        row.signed = sign_for(service, envelope)
        try:
            runtime.intake.open(row.signed, now)
        except Rejected as refused:
            problems.append(
                Problem(number, "", "batch.error.refused", code=refused.code.value, message=refused.message)
            )
    unreferenced = [shown(u.file_name) for u in uploads if upload_key(u.file_name) not in referenced]
    if not problems:
        problems.extend(_already_sent(runtime, institution.id, [sender_message_id(digest, r.number) for r in rows]))
    return Checked(rows, problems, unreferenced, digest)


def _summary(cells: Mapping[str, str]) -> str:
    subject = next((cells[f"subject_{lang}"] for lang in LANGS if cells.get(f"subject_{lang}")), "")
    reference = cells.get("your_reference", "")
    return f"{subject} ({reference})" if subject and reference else subject or reference


def _already_sent(runtime: Runtime, institution_id: str, ids: list[str]) -> list[Problem]:
    """This very file (CSV and PDFs) sent before: a problem saying when, else none."""
    with runtime.sessions() as session:
        count, first = session.execute(
            select(func.count(), func.min(Message.accepted_at)).where(
                Message.institution_id == institution_id, Message.sender_message_id.in_(ids)
            )
        ).one()
    if not count:
        return []
    return [Problem(0, "", "batch.error.already_sent", {"count": count, "when": f"{first:%Y-%m-%d %H:%M} UTC"})]


# -- the pages -------------------------------------------------------------------------------------


def _sender(ctx: Ctx) -> tuple[Institution, SelfService]:
    try:
        return self_service_of(ctx.runtime, ctx.principal)
    except Rejected:
        raise Rejected(ErrorCode.NOT_AUTHORISED, ctx.t("batch.not_authorised")) from None


def _limits(ctx: Ctx) -> dict[str, Any]:
    settings = ctx.web.settings
    return {
        "max_rows": settings.web_max_batch_rows,
        "max_pdf_mb": max(1, settings.web_max_pdf_bytes // (1024 * 1024)),
        "max_total_mb": max(1, form_limit(ctx.web) // (1024 * 1024)),
        "columns": COLUMNS,
        "required": REQUIRED,
    }


async def batch_form(ctx: Ctx) -> Response:
    institution, _ = _sender(ctx)
    return ctx.render("batch/upload.html", message_types=sorted(institution.message_types), **_limits(ctx))


async def example_csv(ctx: Ctx) -> Response:
    """A CSV that uploads as it is (with three PDFs of the user's own): the columns, and a row of each kind."""
    institution, _ = _sender(ctx)
    now = ctx.runtime.intake.clock()
    kind = sorted(institution.message_types)[0] if institution.message_types else "GENERAL_INFORMATION"
    due = (now + timedelta(days=30)).date().isoformat()
    expires = (now + timedelta(days=180)).date().isoformat()
    separator = "," if ctx.lang == "en" else ";"  # what a spreadsheet of the user's language expects
    rows = [
        {
            "recipient_kind": "citizen",
            "recipient_id": "85073003328",
            "message_type": kind,
            "subject_fr": "Votre avertissement-extrait de rôle",
            "subject_nl": "Uw aanslagbiljet",
            "body_fr": "Madame, Monsieur,\n\nVeuillez trouver ci-joint votre document.",
            "body_nl": "Geachte mevrouw, geachte heer,\n\nIn bijlage vindt u uw document.",
            "document": "letter-1.pdf",
            "your_reference": "2026-0001",
        },
        {
            "recipient_kind": "enterprise",
            "recipient_id": "0406798006",
            "message_type": kind,
            "subject_fr": "Invitation à payer",
            "document": "letter-2.pdf",
            "payment_iban": "BE71096123456769",
            "payment_amount": "125.50",
            "payment_due_date": due,
            "payment_reference": "+++010/8068/17183+++",
            "your_reference": "2026-0002",
        },
        {
            "recipient_kind": "citizen",
            "recipient_id": "93051822361",
            "message_type": kind,
            "subject_nl": "Herinnering",
            "body_nl": "Dit is een herinnering; er is geen bijlage.",
            "registered": "yes",
            "expires_on": expires,
            "your_reference": "2026-0003",
        },
    ]
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.get(name, "") for name in COLUMNS])
    return Response(
        "\ufeff" + out.getvalue(),  # the BOM: a spreadsheet then reads the file as UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="batch-example.csv"'},
    )


async def _uploads(ctx: Ctx) -> tuple[bytes | None, list[Upload]]:
    """The CSV (at most its limit and a byte) and the PDFs (each at most its limit and a byte: enough to say
    it is too big); file inputs left empty are no upload."""
    assert ctx.form is not None
    settings = ctx.web.settings
    raw = None
    sheet = ctx.form.get("csv")
    if isinstance(sheet, UploadFile) and (sheet.filename or sheet.size):
        raw = await sheet.read(csv_limit(settings) + 1)
    uploads = []
    for item in ctx.form.getlist("documents"):
        if isinstance(item, UploadFile) and (item.filename or item.size):
            content = await item.read(settings.web_max_pdf_bytes + 1)
            uploads.append(Upload(item.filename or "", content))
    return raw, uploads


async def upload(ctx: Ctx) -> Response:
    institution, service = _sender(ctx)
    raw, uploads = await _uploads(ctx)
    now = ctx.runtime.intake.clock()
    checked: Checked = await _run(
        lambda: check(ctx.runtime, raw, uploads, institution=institution, service=service, now=now)
    )
    counts = {
        "institution": institution.id,
        "rows": len(checked.rows),
        "documents": len(uploads),
        "csv_sha256": hashlib.sha256(raw or b"").hexdigest(),
    }
    if checked.problems:
        await ctx.audit("web-batch", {**counts, "outcome": "invalid", "problems": len(checked.problems)})
        log.info("web batch invalid", extra={"event": "web-batch-invalid"})
        problems = [_explained(ctx, p) for p in sorted(checked.problems, key=lambda p: (p.row, p.column))]
        return ctx.render(
            "batch/result.html",
            status=422,
            sent=False,
            problems=problems,
            results=[],
            unreferenced=checked.unreferenced,
            **_limits(ctx),
        )
    signed = [row.signed for row in checked.rows if row.signed is not None]
    answers: list[Receipt | Rejected] = await _run(lambda: ctx.runtime.intake.submit_many(signed, door="web-batch"))
    results = []
    for row, answer in zip(checked.rows, answers, strict=True):
        result = {"row": row.number, "summary": row.summary, "message_id": None, "code": "", "message": ""}
        if isinstance(answer, Receipt):
            result["message_id"] = answer.message_id
        else:
            result.update(code=answer.code.value, message=answer.message)
        results.append(result)
    accepted = sum(1 for r in results if r["message_id"])
    await ctx.audit(
        "web-batch", {**counts, "outcome": "sent", "accepted": accepted, "refused": len(results) - accepted}
    )
    log.info("web batch sent", extra={"event": "web-batch-sent"})
    return ctx.render(
        "batch/result.html",
        sent=True,
        accepted=accepted,
        problems=[],
        results=results,
        unreferenced=checked.unreferenced,
        **_limits(ctx),
    )


def _explained(ctx: Ctx, problem: Problem) -> dict[str, object]:
    if problem.code:
        text = ctx.t("batch.error.refused", code=problem.code, message=problem.message)
    else:
        text = ctx.t(problem.key, **problem.values)
        if text == problem.key:  # a key of another area's words not there: say it plainly
            text = ctx.t("batch.error.value")
    return {"row": problem.row, "column": problem.column, "text": text}


def routes() -> list[BaseRoute]:
    return [
        Route("/batch", page(batch_form, role="institution"), methods=["GET"]),
        Route("/batch/example.csv", page(example_csv, role="institution"), methods=["GET"]),
        Route("/batch", page(upload, role="institution", form_bytes=form_limit, max_files=MAX_FILES), methods=["POST"]),
    ]


__all__ = ["COLUMNS", "check", "read_rows", "routes", "shown"]
