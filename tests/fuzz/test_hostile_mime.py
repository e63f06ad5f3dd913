"""Hostile MIME, built by hypothesis, fed to the parser: it never raises, always yields
a Message-ID, never posts an empty body when the mail had text, and stays bounded."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridges.email.mime import parse

LIMIT = 1_000_000

header_names = st.sampled_from(["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To",
                                "References", "Content-Type", "Content-Transfer-Encoding",
                                "Content-Disposition", "Date", "Auto-Submitted", "X-Other"])
junk = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
ascii_junk = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=300)
charsets = st.sampled_from(["utf-8", "iso-8859-1", "koi8-r", "x-unknown", "utf-16", "",
                            "utf-8\"; foo=\"", "ascii"])
encodings = st.sampled_from(["base64", "quoted-printable", "8bit", "7bit", "x-uuencode", "bogus"])


@st.composite
def header_lines(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(header_names)
        value = draw(st.one_of(junk, ascii_junk,
                               st.just("=?utf-8?b?" + "A" * draw(st.integers(0, 50)) + "?="),
                               st.just("=?bogus?q?=FF=FE?="), st.just("<" * 100),
                               st.just("x" * draw(st.integers(0, 20000)))))
        lines.append(f"{name}: {value}".encode("utf-8", "surrogateescape"))
    return b"\r\n".join(lines)


@st.composite
def parts(draw: st.DrawFn, depth: int = 0) -> bytes:
    boundary = draw(st.sampled_from(["b1", "", "a" * 80, "--", "x y"]))
    if depth < 6 and draw(st.booleans()):
        children = [draw(parts(depth + 1)) for _ in range(draw(st.integers(0, 3)))]
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + c + b"\r\n" for c in children)
        if draw(st.booleans()):
            body += b"--" + boundary.encode() + b"--\r\n"  # sometimes no closing boundary
        kind = draw(st.sampled_from(["mixed", "alternative", "related"]))
        head = f'Content-Type: multipart/{kind}; boundary="{boundary}"'
        return head.encode() + b"\r\n\r\n" + body
    ctype = draw(st.sampled_from(["text/plain", "text/html", "image/png", "application/pdf",
                                  "message/rfc822", "text/x-weird"]))
    head = (f"Content-Type: {ctype}; charset={draw(charsets)}\r\n"
            f"Content-Transfer-Encoding: {draw(encodings)}")
    if draw(st.booleans()):
        head += f"\r\nContent-Disposition: attachment; filename*=utf-8''{draw(ascii_junk)[:40]}"
    body = draw(st.binary(max_size=2000))
    return head.encode() + b"\r\n\r\n" + body


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(header_lines(), parts(), st.binary(max_size=500))
def test_parser_survives_hostile_mime(headers: bytes, body: bytes, tail: bytes) -> None:
    raw = headers + b"\r\n" + body + tail
    mail = parse(raw, max_attachment_bytes=LIMIT)
    assert mail.message_id.startswith("<") and mail.message_id.endswith(">")
    assert len(mail.attachments) <= 10_000
    assert all(len(a.content) <= LIMIT for a in mail.attachments)
    if not mail.body and not mail.attachments:
        assert "The message has no text." in mail.notes


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=500).filter(lambda t: t.strip()))
def test_a_mail_with_text_is_never_shown_empty(text: str) -> None:
    raw = (b"From: a@partner.test\r\nTo: b@switchboard.test\r\nSubject: s\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           ) + text.encode("utf-8", "surrogatepass")
    mail = parse(raw, max_attachment_bytes=LIMIT)
    assert mail.body.strip() or mail.quoted.strip() or mail.signature.strip()
