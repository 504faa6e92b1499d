"""CSV inventory import: counts, idempotent re-import, updates, and every rejection reason."""

from __future__ import annotations

import io
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from common.states import TaskState
from server import context, inventory
from server.counts import rebuild
from server.database import utcnow
from server.errors import InvalidInput
from server.extensions import db
from server.inventory import import_inventory
from server.models import Item, Task
from server.sites import SiteRegistry


def run_import(session, text: str, chunk_rows: int = 1000):
    return import_inventory(session, io.StringIO(text, newline=""), sites=context.sites(), chunk_rows=chunk_rows)


def items(session) -> dict[str, Item]:
    session.expire_all()
    return {item.key: item for item in session.scalars(select(Item))}


def metadata_tasks(session) -> dict[tuple[str, str], Task]:
    session.expire_all()
    rows = session.execute(select(Item.key, Task).join(Task, Task.item_id == Item.id).where(Task.kind == "metadata"))
    return {(key, task.site): task for key, task in rows}


def test_import_counts_and_creates_one_metadata_task_per_target_site(session):
    report = run_import(
        session,
        "key,url,query,title,sites,priority,artist\n"
        "a,,cats,Cats!,,5,bob\n"
        "b,http://booru.test/post/show/1,,,,,\n"
        "c,,dogs,,tube,,\n",
    )
    assert (report.added, report.updated, report.unchanged, report.rejected) == (3, 0, 0, 0)
    stored = items(session)
    assert stored["a"].extra == {"artist": "bob"} and stored["a"].priority == 5 and stored["a"].title == "Cats!"
    tasks = metadata_tasks(session)
    assert sorted(tasks) == [("a", "booru"), ("a", "tube"), ("b", "booru"), ("c", "tube")]
    assert tasks[("a", "tube")].url == "http://tube.test/search?q=cats"
    assert tasks[("b", "booru")].url == "http://booru.test/post/show/1"
    assert tasks[("a", "booru")].priority == 5


def test_reimporting_the_same_file_changes_nothing(session):
    text = "query,title\ncats,Cats\ndogs,Dogs\n"
    run_import(session, text)
    before = {key: (item.updated_at, item.content_hash) for key, item in items(session).items()}
    report = run_import(session, text)
    assert (report.added, report.updated, report.unchanged, report.rejected) == (0, 0, 2, 0)
    assert {key: (item.updated_at, item.content_hash) for key, item in items(session).items()} == before
    assert session.scalar(select(Task.id).order_by(Task.id.desc())) == 4  # no new tasks


def test_changed_row_updates_its_item_and_resets_changed_targets(session):
    run_import(session, "key,query,priority\nk,cats,1\n")
    tasks = metadata_tasks(session)
    booru = tasks[("k", "booru")]
    booru.state, booru.attempts = TaskState.NOT_FOUND, 5
    session.commit()
    rebuild(session, utcnow())  # written straight into the table: counted again
    report = run_import(session, "key,query,priority,sites\nk,kittens,9,booru\n")
    assert (report.added, report.updated, report.unchanged) == (0, 1, 0)
    item = items(session)["k"]
    assert (item.query, item.priority, item.sites) == ("kittens", 9, ["booru"])
    tasks = metadata_tasks(session)
    assert list(tasks) == [("k", "booru")]  # tube dropped by the new sites column
    task = tasks[("k", "booru")]
    assert (task.url, task.state, task.attempts, task.priority) == (
        "http://booru.test/post?tags=kittens",
        TaskState.QUEUED,
        0,
        9,
    )


def test_title_only_change_keeps_task_progress(session):
    run_import(session, "key,query,title\nk,cats,Old\n")
    task = metadata_tasks(session)[("k", "booru")]
    task.state = TaskState.DONE
    session.commit()
    rebuild(session, utcnow())  # written straight into the table: counted again
    report = run_import(session, "key,query,title\nk,cats,New\n")
    assert report.updated == 1
    assert metadata_tasks(session)[("k", "booru")].state == TaskState.DONE
    assert items(session)["k"].title == "New"


def test_bom_quoting_multiline_fields_and_blank_lines(session):
    text = '\ufeffquery,title,notes\n\ncats,"Cats, ""the"" best","line one\nline two"\n   \n,,\ndogs,Dogs,\n'
    report = run_import(session, text)
    assert (report.added, report.rejected) == (2, 0)
    stored = items(session)
    assert stored["query:cats"].title == 'Cats, "the" best'
    assert stored["query:cats"].extra == {"notes": "line one\nline two"}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (",,,,,", None),  # blank: skipped, not rejected
        ("k1,http://booru.test/1,cats,,,", "not both"),
        ("k2,,,,,", "needs a url or a query"),
        ("k3,ftp://booru.test/1,,,,", "http(s) URL"),
        ("k3b,http://[::1/x,,,,", "not a valid URL (Invalid IPv6 URL)"),
        ("k4,http://elsewhere.test/1,,,,", "no configured site matches"),
        ("k5,http://booru.test/1,,,tube,", "belongs to site 'booru'"),
        ("k6,,cats,,nowhere,", "unknown site(s) nowhere"),
        ("k7,,cats,,slow,", "cannot search"),
        ("k8,,cats,,,high", "priority must be an integer"),
        ("k9,,cats,,,99999999", "priority must be between"),
        ("k10,,cats,,,,extra", "has 7 fields but the header has 6"),
        ("x" * 501 + ",,cats,,,", "key is longer than 500"),
    ],
)
def test_bad_rows_are_rejected_with_line_and_reason_and_good_rows_kept(session, row, reason):
    report = run_import(session, f"key,url,query,title,sites,priority\ngood1,,cats,,,\n{row}\ngood2,,dogs,,,\n")
    assert report.added == 2
    if reason is None:
        assert report.rejected == 0
        return
    assert report.rejected == 1
    [error] = report.errors
    assert error.line == 3 and reason in error.reason, error
    assert set(items(session)) == {"good1", "good2"}


def test_line_numbers_count_physical_lines_of_multiline_rows(session):
    report = run_import(session, 'query,title\ncats,"a\nb\nc"\n,\ndogs,x\n,orphan\n')
    assert report.added == 2
    assert [error.line for error in report.errors] == [7]  # header 1, rows on 2-4, blank 5, dogs 6


def test_duplicate_keys_in_one_file(session):
    report = run_import(session, "key,query\na,cats\nb,dogs\na,cats\na,birds\n", chunk_rows=2)
    assert (report.added, report.unchanged, report.rejected) == (2, 1, 1)
    [error] = report.errors
    assert error.line == 5 and "already used on line 2" in error.reason
    assert items(session)["a"].query == "cats"


def test_a_reimport_knows_a_row_by_its_exact_text_and_still_catches_what_changed(session):
    """A row whose text, header and sites are as when it was stored is unchanged without
    being parsed; anything else about it is parsed and judged as before."""
    text = "key,query,title\na,cats,Cats\nb,dogs,Dogs\n"
    run_import(session, text)
    stored = {key: (item.row_hash, item.content_hash) for key, item in items(session).items()}
    assert stored["a"][0] and stored["a"][0] != stored["b"][0]

    # the same key again later in the file with other values: refused, naming the line
    # the first (unparsed) copy was on
    report = run_import(session, text + "a,birds,Birds\n", chunk_rows=10)
    assert (report.unchanged, report.rejected) == (2, 1)
    assert "already used on line 2" in report.errors[0].reason
    report = run_import(session, text + "a,cats,Cats\na,birds,Birds\n", chunk_rows=1)  # across chunks too
    assert (report.unchanged, report.rejected) == (3, 1)
    assert "already used on line 2" in report.errors[0].reason

    # NUL where a separator was: not mistaken for the stored row
    report = run_import(session, "key,query,title\na,cats\x00Cats\n")
    assert report.rejected == 1 and "NUL" in report.errors[0].reason

    # the columns in another order: the same content (unchanged), and the new text is
    # remembered; an item stored before rows were remembered gets its text the same way
    session.execute(Item.__table__.update().where(Item.key == "b").values(row_hash=None))
    session.commit()
    report = run_import(session, "title,key,query\nCats,a,cats\nDogs,b,dogs\n")
    assert (report.added, report.updated, report.unchanged, report.rejected) == (0, 0, 2, 0)
    again = {key: (item.row_hash, item.content_hash) for key, item in items(session).items()}
    assert again["a"][0] != stored["a"][0] and again["b"][0] is not None
    assert again["a"][1] == stored["a"][1]

    # a changed row stores its new text
    report = run_import(session, "title,key,query\nKittens,a,cats\n")
    assert report.updated == 1 and items(session)["a"].row_hash not in (again["a"][0], None)


@pytest.mark.parametrize("chunk_rows", [1, 10])
def test_a_repeated_key_is_judged_in_file_order_whichever_copy_is_the_stored_text(session, chunk_rows):
    """Stored rows are recognised all at once per chunk, but a key's copies are still
    judged in the order of the file: the first copy wins, a later one with other values
    is refused naming it, and the very same row twice is harmless."""
    run_import(session, "key,query,title\na,cats,Cats\nb,dogs,Dogs\n")

    # the changed copy comes first: it is applied, and the stored text after it is refused
    report = run_import(session, "key,query,title\na,cats,Kittens\na,cats,Cats\n", chunk_rows=chunk_rows)
    assert (report.updated, report.unchanged, report.rejected) == (1, 0, 1)
    assert report.errors[0].line == 3 and "already used on line 2" in report.errors[0].reason
    assert items(session)["a"].title == "Kittens"

    # the stored text twice, around another key: both unchanged, nothing refused
    report = run_import(session, "key,query,title\nb,dogs,Dogs\na,cats,Kittens\nb,dogs,Dogs\n", chunk_rows=chunk_rows)
    assert (report.added, report.updated, report.unchanged, report.rejected) == (0, 0, 3, 0)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite has one writer at a time
@pytest.mark.parametrize("files_hold", ["new keys", "the stored rows", "changed rows"])
def test_two_imports_at_once_of_the_same_keys_in_opposite_orders_both_finish(app, session, files_hold):
    """Imports lock what they write (new keys, the marks of items read, changed items):
    two imports of the same keys, one file the other reversed, must not take those locks
    in opposite orders and end in a deadlock (an import failing, a 500 over HTTP)."""
    count = 3000
    if files_hold != "new keys":
        assert run_import(session, "key,query\n" + "".join(f"k{n},q{n}\n" for n in range(count))).added == count
    titles = ("A", "B") if files_hold == "changed rows" else ("", "")
    rows = [[f"k{n},q{n},{title}\n" for n in range(count)] for title in titles]
    files = ["key,query,title\n" + "".join(rows[0]), "key,query,title\n" + "".join(reversed(rows[1]))]
    db.session.remove()
    reports: list = [None, None]
    failures: list[Exception] = []
    start = threading.Barrier(2)

    def import_one(which: int) -> None:
        with app.app_context():
            try:
                start.wait()
                reports[which] = run_import(db.session, files[which], chunk_rows=5000)
            except Exception as problem:
                failures.append(problem)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=import_one, args=(which,)) for which in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert all(report.rejected == 0 for report in reports)
    if files_hold == "new keys":  # one adds them, the other then finds them as it would write them
        assert sorted(report.added for report in reports) == [0, count]
        assert all(report.added + report.unchanged == count for report in reports)
    elif files_hold == "the stored rows":
        assert [report.unchanged for report in reports] == [count, count]
    else:
        assert [report.updated for report in reports] == [count, count]
    assert len(items(session)) == count


def test_a_row_the_sites_no_longer_accept_is_rejected_on_reimport(app_factory):
    """The sites a row was read against are part of what is remembered: a row stored
    while a site matched its URL is judged again when the sites change."""
    text = "url,title\nhttp://booru.test/post/show/1,One\n"
    first = app_factory()
    with first.app_context():
        assert run_import(db.session, text).added == 1
        db.session.remove()
    narrower = app_factory(SITES={"tube": first.config["SITES"]["tube"]})
    with narrower.app_context():
        report = run_import(db.session, text)
        assert report.rejected == 1 and "no configured site matches" in report.errors[0].reason


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite plans from its indexes alone
def test_a_big_import_has_postgresql_look_at_the_tables_again(session, monkeypatch):
    """After a bulk load the planner still holds the old figures (it took a changed row's
    task lookup for a scan of every task); a big import refreshes them, a small one not."""
    from sqlalchemy import text as sql

    monkeypatch.setattr(inventory, "ANALYZE_AFTER_ADDED", 5)

    def counted(table: str) -> float:
        return session.scalar(sql("SELECT reltuples FROM pg_class WHERE relname = :table"), {"table": table})

    run_import(session, "query\n" + "".join(f"q{n}\n" for n in range(7)))
    assert counted("items") == counted("item_imports") == 7  # the lookup of each chunk joins the two
    run_import(session, "query\nmore1\nmore2\n")  # below the threshold: not again
    assert counted("items") == counted("item_imports") == 7


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("title,artist\nx,y\n", "needs a 'url' or a 'query' column"),
        ("query,title,title\ncats,a,b\n", "duplicate column"),
        ("query,,title\ncats,a,b\n", "column 2 has no name"),
    ],
)
def test_bad_header_rejects_the_whole_file(session, text, problem):
    with pytest.raises(InvalidInput, match=problem):
        run_import(session, text)
    assert items(session) == {}


def test_invalid_utf8_mid_file_rejects_that_row_and_keeps_every_other(session):
    data = b"\xef\xbb\xbfquery\ncats\ndogs\nbirds \xe9t\xe9\nfish\n"  # Latin-1 on line 4
    report = import_inventory(session, io.BytesIO(data), sites=context.sites(), chunk_rows=1)
    assert report.aborted is None and report.rejected == 1 and report.added == 3
    assert report.errors[0].line == 4
    assert "line 4 is not valid UTF-8 (byte 0xe9 at column 7)" in report.errors[0].reason
    assert set(items(session)) == {"query:cats", "query:dogs", "query:fish"}


def test_an_upload_that_breaks_off_keeps_the_rows_before_it_and_says_where(session):
    """Lines are read many at once: a stream failing among them still has every row
    before the failure imported, and the report names the last line read."""

    def dropped_upload():
        yield b"query\n"
        for n in range(2, 2501):
            yield f"q{n}\n".encode()
        raise OSError("connection reset by peer")

    report = import_inventory(session, dropped_upload(), sites=context.sites(), chunk_rows=1000)
    assert (report.added, report.rejected) == (2499, 0)
    assert report.aborted == "the file ended early after line 2500: connection reset by peer"
    assert len(items(session)) == 2499


class _RowByRow(inventory._RowLines):
    """The reader with every line read on its own, as before lines were read in blocks."""

    def plain_rows(self, most: int) -> None:
        return None


def _read(data: bytes, lines_kind: type, chunk_rows: int) -> tuple[list, str | None]:
    lines = lines_kind(io.BytesIO(data))
    reading = inventory._Reading(inventory._read_header(lines), SiteRegistry())
    report = inventory.ImportReport(import_id="x")
    rows = [
        (row.line, row.values, row.key, row.row_hash, row.error)
        for chunk in inventory._chunks(lines, reading, chunk_rows, report)
        for row in chunk
    ]
    return rows, report.aborted


#: Lines a file may hold: plain rows, quoted ones, a quoted field running over lines, a
#: quote never closed, stray quotes, CRLF, a bare CR, NUL, bytes that are not UTF-8,
#: blank lines, too many fields.
CSV_LINES = st.one_of(
    st.sampled_from(
        [
            b"k1,cats,Cats\n",
            b'k2,"dogs, big",Dogs\n',
            b'k3,fish,"two\nlines"\n',
            b'k3,fish,"two\n',
            b'lines"\n',
            b'"never closed\n',
            b'k4,"a"b,x\n',
            b'k5,"say ""hi""",x\n',
            b"k6,cows,Cows\r\n",
            b"k7,a\rb,x\n",
            b"k8,nul\x00here,x\n",
            b"k9,b\xe9te,x\n",
            b"\n",
            b"  ,  \n",
            b"k10,q,t,extra\n",
        ]
    ),
    st.text(alphabet='ab,"\r \x00\u00e9', max_size=10).map(lambda text: text.encode() + b"\n"),
    st.binary(max_size=6).map(lambda raw: raw + b"\n"),
)


@settings(max_examples=300, deadline=None)
@given(body=st.lists(CSV_LINES, max_size=40), chunk_rows=st.integers(1, 8), last_newline=st.booleans())
def test_reading_lines_in_blocks_gives_the_rows_reading_them_one_by_one_gives(body, chunk_rows, last_newline):
    """Lines are read many at once where each is one whole row; whatever else a file
    holds must come out as reading every line on its own made it: the same rows, values,
    keys, hashes and errors, on the same lines."""
    data = b"key,query,title\n" + b"".join(body)
    if not last_newline:
        data = data.removesuffix(b"\n")
    for chunk_rows_here in (chunk_rows, 1000):
        assert _read(data, inventory._RowLines, chunk_rows_here) == _read(data, _RowByRow, chunk_rows_here)


BROKEN_CSV = [
    # (what, file, rejected lines, keys imported)
    ("unterminated quote", 'query,title\ncats,"never closed\ndogs,ok\nfish,ok\n', [2], ["dogs", "fish"]),
    ("text after a closing quote", 'query,title\ncats,"a"b\ndogs,ok\n', [2], ["dogs"]),
    # The quote opened on line 2 closes on line 3 before "y": line 2 is rejected, line 3 read
    # again on its own (a quote inside an unquoted field is plain text).
    ("a quoted field closed by a stray quote", 'query,title\ncats,"open\ndogs,x"y\nfish,ok\n', [2], ["dogs", "fish"]),
    ("NUL in a field", "query\ncats\x00dogs\nfish\n", [2], ["fish"]),
    ("CRLF line ends", "query,title\r\ncats,a\r\ndogs,b\r\n", [], ["cats", "dogs"]),
    ("BOM and CRLF", "\ufeffquery\r\ncats\r\n", [], ["cats"]),
    ("a legitimately multi-line quoted field", 'query,title\ncats,"two\nlines"\ndogs,x\n', [], ["cats", "dogs"]),
    ("a huge field", "query,title\ncats," + "x" * (2 << 20) + "\ndogs,ok\n", [2], ["dogs"]),
]


@pytest.mark.parametrize(("what", "text", "rejected", "imported"), BROKEN_CSV, ids=[case[0] for case in BROKEN_CSV])
def test_broken_csv_rejects_the_affected_rows_with_their_lines_and_keeps_the_rest(
    session, what, text, rejected, imported
):
    report = import_inventory(session, io.BytesIO(text.encode("utf-8")), sites=context.sites())
    assert [error.line for error in report.errors] == rejected, report.errors
    assert report.rejected == len(rejected) and report.added == len(imported)
    assert sorted(items(session)) == sorted(f"query:{query}" for query in imported)


def test_a_row_too_long_in_fields_each_within_the_csv_limit_is_refused(session):
    """Each field is under the csv module's own limit, the row is over ours: refused as
    a runaway row, also when its line is read in a block with others."""
    columns = [f"c{n}" for n in range(11)]
    row = ",".join(["x" * 100_000] * len(columns))
    text = f"query,{','.join(columns)}\ncats,{row}\ndogs{',' * len(columns)}\n"
    report = import_inventory(session, io.BytesIO(text.encode()), sites=context.sites(), chunk_rows=1000)
    assert [error.line for error in report.errors] == [2]
    assert f"longer than {inventory.MAX_ROW_CHARACTERS} characters" in report.errors[0].reason
    assert sorted(items(session)) == ["query:dogs"]


def test_query_whitespace_is_normalized_into_the_derived_key(session):
    run_import(session, "query\n  big   cats \n")
    assert list(items(session)) == ["query:big cats"]


def test_error_list_is_capped_but_every_rejection_is_counted(session, monkeypatch):
    import server.inventory

    monkeypatch.setattr(server.inventory, "MAX_REPORTED_ERRORS", 5)
    report = run_import(session, "query,priority\n" + "cats,x\n" * 20)
    assert report.rejected == 20 and len(report.errors) == 5 and report.errors_truncated


def _import_peak_rss(tmp_path, rows: int, database_url: str) -> tuple[int, str]:
    """Peak RSS (KiB) of ``flask import-csv`` importing a generated file of ``rows`` rows."""
    import os
    import subprocess
    import sys

    from support.processes import REPO_ROOT, coordinator_env
    from tests.helpers import TEST_SITES

    path = tmp_path / f"inventory-{rows}.csv"
    with open(path, "w", encoding="utf-8") as out:
        out.write("\ufeffkey,query,title,priority,sites,artist\n")
        for number in range(rows):
            out.write(f'k{number},tag_{number},"Title, number {number}",{number % 7},booru,artist {number % 1000}\n')
    config = tmp_path / "config.py"
    config.write_text("")
    env = {**os.environ, **coordinator_env(database_url, TEST_SITES, config)}
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    output, errors = tmp_path / f"out-{rows}.txt", tmp_path / f"err-{rows}.txt"
    with open(output, "wb") as stdout, open(errors, "wb") as stderr:
        process = subprocess.Popen(
            [flask, "--app", "server", "import-csv", "--quiet", str(path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, errors.read_text()[-2000:]
    return usage.ru_maxrss, output.read_text().strip()


@pytest.mark.slow
def test_a_million_rows_import_with_flat_memory(tmp_path):
    """Streamed in chunks: 1M rows need no more memory than 20k rows (shown on SQLite,
    in a database of its own so the other tests do not inherit 2M rows)."""
    from server import create_app
    from server.cli import init_db
    from tests.conftest import close_app

    database_url = f"sqlite:///{tmp_path / 'million.sqlite3'}"
    app = create_app({"DATABASE_URL": database_url})
    with app.app_context():
        init_db()
    close_app(app)
    small_rss, small_summary = _import_peak_rss(tmp_path, 20_000, database_url)
    large_rss, large_summary = _import_peak_rss(tmp_path, 1_000_000, database_url)
    assert small_summary == "added 20000, updated 0, unchanged 0, rejected 0"
    assert large_summary == "added 980000, updated 0, unchanged 20000, rejected 0"
    assert large_rss < small_rss * 1.25, (small_rss, large_rss)
