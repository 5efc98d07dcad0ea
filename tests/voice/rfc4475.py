"""Torture messages of RFC 4475 ("SIP Torture Test Messages") that a media worker must refuse.

As written in the RFC, but for the top Via of the two a worker is sent: its sent-by is `{via}`, the
test's own socket (the RFC's host5.example.com / host.example.com would send the answer to port 5060
of a name that does not resolve).
"""

from __future__ import annotations

# 3.1.2.7: Content-Length larger than the message (over UDP).
CLERR = (
    "INVITE sip:user@example.com SIP/2.0\r\n"
    "Max-Forwards: 80\r\n"
    "To: sip:j.user@example.com\r\n"
    "From: sip:caller@example.net;tag=93942939o2\r\n"
    "Contact: <sip:caller@hungry.example.net>\r\n"
    "Call-ID: clerr.0ha0isndaksdjweiafasdk3\r\n"
    "CSeq: 8 INVITE\r\n"
    "Via: SIP/2.0/UDP {via};branch=z9hG4bK-39234-23523\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 9999\r\n"
    "\r\n"
    "v=0\r\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.155\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.155\r\n"
    "t=0 0\r\n"
    "m=audio 49217 RTP/AVP 0 12\r\n"
    "m=video 3227 RTP/AVP 31\r\n"
    "a=rtpmap:31 LPC\r\n"
)
# 3.1.2.16: the request line's method and the CSeq's differ.
MISMATCH01 = (
    "OPTIONS sip:user@example.com SIP/2.0\r\n"
    "To: sip:j.user@example.com\r\n"
    "From: sip:caller@example.net;tag=34525\r\n"
    "Max-Forwards: 6\r\n"
    "Call-ID: mismatch01.dj0234sxdfl3\r\n"
    "CSeq: 8 INVITE\r\n"
    "Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw\r\n"
    "l: 0\r\n"
    "\r\n"
)

# RFC 4475 3.1.2.17: an unknown method whose CSeq names another.
MISMATCH02 = (
    "NEWMETHOD sip:user@example.com SIP/2.0\r\n"
    "To: sip:j.user@example.com\r\n"
    "From: sip:caller@example.net;tag=34525\r\n"
    "Max-Forwards: 6\r\n"
    "Call-ID: mismatch02.dj0234sxdfl3\r\n"
    "CSeq: 8 INVITE\r\n"
    "Contact: <sip:caller@host.example.net>\r\n"
    "Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw\r\n"
    "Content-Type: application/sdp\r\n"
    "l: 138\r\n"
    "\r\n"
    "v=0\r\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.1\r\n"
    "c=IN IP4 192.0.2.1\r\n"
    "m=audio 49217 RTP/AVP 0 12\r\n"
    "m=video 3227 RTP/AVP 31\r\n"
    "a=rtpmap:31 LPC\r\n"
)
