"""The command line's imports, tokens and digests, against the test's store. Input a command cannot
use is answered with the reason and exit code 2, never a traceback (exit code 1)."""

import base64
import os
import re
import socket
import stat
import time
import uuid

import pytest

from api.cli.common import configured
from api.cli.serving import redact, show_demo_tokens
from api.settings import get_settings
from tests.helpers import free_port


def said(result) -> str:
    """What a command printed, as one line: Rich wraps at the terminal's width, in a box for usage errors."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def codes(api) -> set[str]:
    return {u["code"] for u in api.client.get("/v1/org-units", headers=api.token("auditor")).json()["items"]}


class TestOrgsImport:
    def test_the_units_of_a_file_join_the_tree_once(self, api, cli, tmp_path):
        file = tmp_path / "units.csv"
        file.write_text("code,name,kind\n350502777001,新村社区,village\n350502777,新街道,township\n", encoding="utf-8")
        result = cli("orgs", "import", str(file))
        assert result.exit_code == 0 and "2 new org units of 2 in the file" in said(result), result.output
        items = api.client.get("/v1/org-units", headers=api.token("auditor")).json()["items"]
        assert {"code": "350502777001", "name": "新村社区", "kind": "village", "parent": "350502777"} in items
        assert "0 new org units of 2 in the file" in said(cli("orgs", "import", str(file)))

    def test_a_bad_row_is_named_by_its_row_in_the_file_and_nothing_is_added(self, api, cli, tmp_path):
        file = tmp_path / "units.csv"
        file.write_text("code,name,kind\n350502778,街道,township\n\n350502778001,村,hamlet\n", encoding="utf-8")
        result = cli("orgs", "import", str(file))
        assert result.exit_code == 2 and "row 4 kind: must be one of" in said(result), result.output
        assert "350502778" not in codes(api)

    @pytest.mark.parametrize("content,says", [
        (b"code,name\n350502779,x\n", "file: has no kind column"),
        (b"", "file: has no code column"),
    ])
    def test_a_file_without_its_columns_is_refused(self, cli, tmp_path, content, says):
        file = tmp_path / "units.csv"
        file.write_bytes(content)
        result = cli("orgs", "import", str(file))
        assert result.exit_code == 2 and says in said(result), result.output


class TestFilesThatAreNotThere:
    @pytest.mark.parametrize("command", [
        ("orgs", "import", "{missing}"),
        ("import", "deliveries", "{missing}", "--contract", str(uuid.uuid4())),
        ("audit", "verify", "--digest", "{missing}"),
    ])
    def test_are_named_without_a_traceback(self, cli, tmp_path, command):
        missing = str(tmp_path / "missing.csv")
        result = cli(*(part.format(missing=missing) for part in command))
        assert result.exit_code == 2 and "does not exist" in said(result), result.output

    def test_nor_is_a_store_in_a_folder_that_is_not_there(self, cli, settings, tmp_path, monkeypatch):
        if settings.is_postgres:
            pytest.skip("a SQLite store's folder")
        monkeypatch.setenv("LASTMETER_DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'lastmeter.db'}")
        result = cli("projections", "status")
        assert result.exit_code == 2 and "cannot open the store" in said(result), result.output

    def test_nor_a_postgresql_that_does_not_answer_and_at_once(self, cli, settings, monkeypatch):
        """The pool retried for 30 s, then said only that it got no connection."""
        if not settings.is_postgres:
            pytest.skip("a PostgreSQL store")
        with socket.socket() as closed:  # a port no one listens on
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        monkeypatch.setenv("LASTMETER_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/test")
        get_settings.cache_clear()
        began = time.monotonic()
        result = cli("tokens", "list")
        assert result.exit_code == 2 and "cannot open the store" in said(result), result.output
        assert "Connection refused" in said(result) and time.monotonic() - began < 10, result.output


class TestDigests:
    def test_a_file_that_is_not_a_digest_is_refused(self, cli, tmp_path):
        head = '"' + "a" * 64 + '"'
        for text in ("not json", "[1, 2]", '{"position": "7", "head": "ab"}', '{"position": 7, "head": "ab"}',
                     f'{{"position": -5, "head": {head}}}', f'{{"position": true, "head": {head}}}',
                     f'{{"position": 100000000000000000000, "head": {head}}}', "[" * 100_000 + "]" * 100_000):
            kept = tmp_path / "digest.json"
            kept.write_text(text)
            result = cli("audit", "verify", "--digest", str(kept))
            assert result.exit_code == 2 and "is not a digest written by" in said(result), (text, result.output)

    def test_a_digest_that_cannot_be_written_says_where(self, cli, tmp_path):
        result = cli("audit", "digest", "--out", str(tmp_path / "no-such-folder" / "digest.json"))
        assert result.exit_code == 2 and "--out: cannot write" in said(result), result.output


class TestTokens:
    def test_a_token_is_listed_and_once_revoked_refused(self, api, cli, lastmeter):
        made = cli("tokens", "create", "--user", "zhao-worker", "--role", "case_worker", "--org-unit", "350502")
        assert made.exit_code == 0, made.output
        secret = made.output.strip().splitlines()[-1]
        assert api.client.get("/v1/case-kinds", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert "zhao-worker" in cli("tokens", "list").output
        token = next(t for t in lastmeter.tokens() if t.user == "zhao-worker")
        assert cli("tokens", "revoke", str(token.id)).exit_code == 0
        assert lastmeter.repository.get(token.id).revoked
        assert lastmeter.find_token(secret) is None

    def test_the_list_piped_to_a_script_gives_ids_whole_that_revoke_takes(self, cli, lastmeter, monkeypatch):
        """A table at the terminal's width cut the ids short: `grep USER | cut -f1` found no id."""
        monkeypatch.setenv("COLUMNS", "80")
        assert cli("tokens", "create", "--user", "qian-supervisor-of-a-long-name", "--role", "supervisor",
                   "--org-unit", "350502").exit_code == 0
        line = next(line for line in cli("tokens", "list").output.splitlines() if "qian-supervisor-of-a-long-name" in line)
        token_id = line.split("\t")[0]
        assert cli("tokens", "revoke", token_id).exit_code == 0
        assert next(t for t in lastmeter.tokens() if str(t.id) == token_id).revoked

    def test_revoking_a_token_that_does_not_exist_is_refused(self, cli):
        result = cli("tokens", "revoke", str(uuid.uuid4()))
        assert result.exit_code == 2 and "not found" in said(result), result.output


@pytest.mark.parametrize("name, value, reason", [
    ("POOL_SIZE", "1", "Input should be greater than or equal to 2"),  # startup holds one and needs another
    ("SCHEMA", "Case-Files", "must be a lowercase name"),  # the search path would fold it to another
])
def test_a_setting_that_is_not_valid_is_named_not_a_traceback(cli, monkeypatch, name, value, reason):
    monkeypatch.setenv(f"LASTMETER_POSTGRES_{name}", value)
    get_settings.cache_clear()
    result = cli("tokens", "list")
    assert result.exit_code == 2 and f"LASTMETER_POSTGRES_{name}: " in said(result), result.output
    assert reason in said(result), result.output


def test_a_schema_not_there_yet_is_made_on_first_start(cli, settings, monkeypatch):
    """An operator names a schema of its own for lastmeter; PostgreSQL had said only that "no schema
    has been selected to create in"."""
    import psycopg

    if not settings.is_postgres:
        pytest.skip("a PostgreSQL schema")
    schema = f"{settings.postgres_schema}_new"
    monkeypatch.setenv("LASTMETER_POSTGRES_SCHEMA", schema)
    get_settings.cache_clear()
    try:
        created = cli("tokens", "create", "--user", "w1", "--role", "case_worker", "--org-unit", "350502")
        assert created.exit_code == 0, created.output
        assert cli("tokens", "list").exit_code == 0
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                                                      (schema,))}
        assert {"lastmeter_events", "person_keys"} <= tables, tables
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_an_unbounded_aggregate_cache_is_refused(cli, monkeypatch):
    """-1 made the library's unbounded cache, which an erasure cannot sweep of the person's values."""
    monkeypatch.setenv("LASTMETER_AGGREGATE_CACHE_SIZE", "-1")
    get_settings.cache_clear()
    result = cli("tokens", "list")
    assert result.exit_code == 2 and "LASTMETER_AGGREGATE_CACHE_SIZE" in said(result), result.output


class TestAuditReplay:
    def test_nothing_is_cut_short_on_a_narrow_terminal_and_json_gives_it_whole(self, api, desk, cli):
        import json

        case = desk.open()
        visit = desk.post(f"/v1/cases/{case['id']}/visits", {"mode": "door_to_door", "summary": "家访",
                                                              "visited_at": "2026-11-18T10:30:00+08:00"})
        assert visit.status_code == 200, visit.text
        auditor = api.token("auditor")
        history = api.client.get(f"/v1/cases/{case['id']}/history", headers=auditor).json()["items"]
        shown = cli("audit", "replay", case["id"])  # the runner's terminal is 80 columns wide
        assert shown.exit_code == 0 and "…" not in shown.output, shown.output
        whole = cli("audit", "replay", case["id"], "--json")
        document = json.loads(whole.output)  # as an auditor without personal-data rights reads it
        assert document["history"] == history and document["state"]["version"] == 2


class TestConfiguration:
    @pytest.mark.parametrize("key", [base64.b64encode(bytes(32)).decode(),  # a key, not this store's
                                     "notbase64x", base64.b64encode(b"abc").decode()])
    def test_a_master_key_that_cannot_open_the_store_is_named_without_a_traceback(self, cli, monkeypatch, key):
        cli("tokens", "list")  # the store exists, its keys wrapped with the test's master key
        monkeypatch.setenv("LASTMETER_MASTER_KEY", key)
        get_settings.cache_clear()
        result = cli("tokens", "list")
        assert result.exit_code == 2 and "cannot open the store" in said(result), result.output
        served = cli("serve", "--port", str(free_port()))  # said before uvicorn starts, not in its traceback
        assert served.exit_code == 2 and "cannot open the store" in said(served), served.output

    @pytest.mark.parametrize("option", [("--port", "99999"), ("--port", "0"), ("--workers", "0")])
    def test_serve_refuses_a_port_or_a_number_of_workers_that_cannot_be(self, cli, option):
        result = cli("serve", *option)
        assert result.exit_code == 2 and option[0] in said(result), result.output


def test_the_store_s_url_is_shown_without_any_part_of_its_password():
    assert redact("postgresql://postgres:Pa@ssw0rd@127.0.0.1:5432/lm") == "postgresql://***@127.0.0.1:5432/lm"


def test_each_postgresql_schema_keeps_its_demo_tokens_in_a_file_of_its_own():
    """Seeding a second schema from the same folder overwrote the first's tokens, for good."""
    from api.cli.serving import demo_tokens_file
    from api.settings import Settings

    url = "postgresql://postgres@127.0.0.1:5432/test"
    files = [demo_tokens_file(Settings(database_url=url, postgres_schema=schema)) for schema in ("", "public", "a", "b")]
    assert [str(f) for f in files] == [".lastmeter-demo-tokens", ".lastmeter-demo-tokens",
                                       ".lastmeter-a-demo-tokens", ".lastmeter-b-demo-tokens"]


def test_a_demo_seeded_before_whose_tokens_file_is_gone_says_how_to_make_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LASTMETER_DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    monkeypatch.setenv("LASTMETER_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    get_settings.cache_clear()
    try:
        show_demo_tokens(configured())
        (tmp_path / "demo.demo-tokens").unlink()  # seeded from another folder, say
        capsys.readouterr()
        show_demo_tokens(configured())
    finally:
        get_settings.cache_clear()
    said = " ".join(capsys.readouterr().out.split())
    assert "its tokens are not in" in said and "lastmeter tokens create" in said, said


def test_the_demo_tokens_file_is_its_owners_alone_from_the_moment_it_exists(tmp_path, monkeypatch):
    """It holds the demo admin's secret: created readable by others, then narrowed, it was readable between."""
    created = {}
    real_open = os.open

    def watching(path, flags, mode=0o777, *args, **kwargs):
        created[os.fspath(path)] = mode
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setenv("LASTMETER_DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    monkeypatch.setenv("LASTMETER_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    get_settings.cache_clear()
    monkeypatch.setattr(os, "open", watching)
    try:
        show_demo_tokens(configured())
    finally:
        get_settings.cache_clear()
    tokens_file = tmp_path / "demo.demo-tokens"
    assert created[os.fspath(tokens_file)] == 0o600 and stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
