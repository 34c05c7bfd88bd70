"""``--encoding``: UTF-8 by default, CP932 (Shift_JIS) on request, ``auto``
that reads CP932 where UTF-8 fails; raw bytes stay in the dead letter."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.decoding import DecodeFailed, Decoder, resolve_encoding
from connectors.inputs import Record
from connectors.pipeline import Pipeline
from zonewatch.app.cli import cli
from zonewatch.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# A FortiGate user-authentication event with Japanese names, as a
# Japanese-locale appliance exports it in CP932 ("髙" and "①" exist only in CP932).
LINE = (
    'date=2026-11-26 time=09:00:01 devname="本庁-FW①" devid="FG100F" logid="0102043008" '
    'type="event" subtype="user" level="notice" vd="root" srcip=10.10.4.21 '
    'user="髙橋" action="auth-logon" status="success" msg="ユーザー認証成功"'
)


def test_shift_jis_is_read_as_cp932_and_other_codecs_are_checked() -> None:
    assert resolve_encoding("Shift_JIS") == "cp932"
    assert resolve_encoding("windows-31j") == "cp932"
    assert resolve_encoding("UTF8") == "utf-8"
    assert resolve_encoding("euc-jp") == "euc_jp"
    with pytest.raises(ConfigError, match="unknown encoding"):
        resolve_encoding("klingon")
    with pytest.raises(ConfigError, match="not line-oriented"):
        resolve_encoding("utf-16")


def test_cp932_input_parses_with_encoding_cp932_and_is_refused_as_utf8() -> None:
    data = LINE.encode("cp932")
    plain = Pipeline("firewall", "fortigate", zones=None)
    _, letter = plain.handle(Record(data, position=1))
    assert letter is not None and "not UTF-8" in letter.reason and "--encoding" in letter.reason
    assert letter.raw_encoding == "base64" and base64.b64decode(letter.raw) == data
    japanese = Pipeline("firewall", "fortigate", zones=None, encoding="shift_jis")
    [event], letter = japanese.handle(Record(data, position=1))
    assert letter is None
    assert event["user"]["name"] == "髙橋" and event["observer"]["name"] == "本庁-FW①"
    assert event["message"] == "ユーザー認証成功"
    assert japanese.stats.encodings == {"cp932": 1}


def test_auto_reads_a_file_mixing_utf8_and_cp932_and_drops_a_bom() -> None:
    pipeline = Pipeline("firewall", "auto", zones=None, encoding="auto")
    records = [
        b"\xef\xbb\xbf" + LINE.encode("utf-8"),  # a BOM opens the file
        LINE.encode("cp932"),
        LINE.replace("髙橋", "tanaka").encode("ascii", "replace"),
    ]
    users = []
    for i, data in enumerate(records):
        [event], letter = pipeline.handle(Record(data, position=i))
        assert letter is None
        users.append(event["user"]["name"])
        assert event["event"]["original"].startswith("date=")
    assert users == ["髙橋", "髙橋", "tanaka"]
    assert pipeline.stats.encodings == {"utf-8": 2, "cp932": 1}
    assert "decoded as utf-8 2, cp932 1" in pipeline.stats.summary()


def test_auto_refuses_utf16_and_bytes_no_encoding_reads() -> None:
    pipeline = Pipeline("firewall", "auto", zones=None, encoding="auto")
    utf16 = LINE.encode("utf-16")
    _, letter = pipeline.handle(Record(utf16, position=0))
    assert letter is not None and "NUL bytes" in letter.reason
    assert base64.b64decode(letter.raw) == utf16
    _, letter = pipeline.handle(Record(b"\x81\x39 broken", position=1))
    assert letter is not None and "neither UTF-8" in letter.reason and "nor CP932" in letter.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_refused_with_a_reason(data: bytes) -> None:
    decoder = Decoder("auto")
    try:
        text = decoder(data)
    except DecodeFailed as exc:
        assert str(exc)
    else:
        assert isinstance(text, str)


def test_parse_encoding_option(tmp_path: Path) -> None:
    path = tmp_path / "fw.log"
    path.write_bytes(LINE.encode("cp932") + b"\n")
    env = {"ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml")}
    args = ["parse", "--source", "firewall", "--encoding", "auto", str(path)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["user"]["name"] == "髙橋"
    result = CliRunner().invoke(cli, [*args[:3], "--encoding", "klingon", str(path)], env=env)
    # zonewatch's main() turns this into exit code 78 (bad configuration)
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 78
    assert "unknown encoding 'klingon'" in str(result.exception)
