from __future__ import annotations

import socket
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.inputs.syslog import FrameDecoder, SyslogInput

HORIZON = (
    '<14>1 2026-03-02T09:15:00.000+09:00 cs01 View - 73 [View@6876 Severity="INFO" '
    'Module="Agent" EventType="AGENT_CONNECTED" UserSID="S-1-5-21-1"] User connected'
)


def _collect(source: SyslogInput, n: int) -> list:
    out = []
    for rec in source:
        if rec is not None:
            out.append(rec)
            if len(out) == n:
                break
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=80).filter(lambda b: b"\n" not in b), max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
    st.integers(1, 40),
)
def test_framing_survives_any_split(messages, octet, chunk) -> None:
    stream = b""
    expected = []
    for msg, counted in zip(messages, octet, strict=False):
        if counted:
            stream += b"%d %s" % (len(msg), msg)
            expected.append(msg.rstrip(b"\r\n"))
        else:
            if msg[:1].isdigit() or not msg.strip(b"\x00 \r"):
                continue  # a plain line starting with a digit reads as a length prefix
            stream += msg + b"\n"
            expected.append(msg.rstrip(b"\r"))
    dec = FrameDecoder(limit=1000)
    got = []
    for i in range(0, len(stream), chunk):
        got += [m for m, _ in dec.feed(stream[i : i + chunk])]
    got += [m for m, _ in dec.flush()]
    assert got == expected


def test_oversized_frames_are_cut_and_marked() -> None:
    dec = FrameDecoder(limit=10)
    out = list(dec.feed(b"30 " + b"a" * 30 + b"<1>short\n" + b"b" * 25 + b"\nok\n"))
    assert out == [(b"a" * 10, 30), (b"<1>short", None), (b"b" * 10, 25), (b"ok", None)]


def test_udp_and_tcp_receive_real_messages() -> None:
    udp = SyslogInput("udp", "127.0.0.1", 0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(HORIZON.encode(), udp.address)
        [rec] = _collect(udp, 1)
        assert rec.data == HORIZON.encode() and rec.peer == "udp:127.0.0.1"
    finally:
        udp.close()
    tcp = SyslogInput("tcp", "127.0.0.1", 0)

    def send() -> None:
        with socket.create_connection(tcp.address) as s:
            body = HORIZON.encode()
            s.sendall(b"%d %s" % (len(body), body) + HORIZON.encode() + b"\n")

    try:
        threading.Thread(target=send, daemon=True).start()
        recs = _collect(tcp, 2)
        assert [r.data for r in recs] == [HORIZON.encode()] * 2
    finally:
        tcp.close()
