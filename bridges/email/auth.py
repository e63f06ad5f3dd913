"""Who really sent an email: DKIM, SPF and DMARC, or a trusted mail server's word.

A From header is only a claim. An email may act as its sender's chat identity (be
shown as that person, use a reply address) only when the claim is authenticated:
DMARC passes, or, for a domain that publishes no DMARC policy, a DKIM signature or
an SPF pass is aligned with the From domain.

Where the evidence comes from, in order:
1. an ``Authentication-Results`` header added by a configured trusted server (the
   receiving MTA that already checked; RFC 8601 says to honour only your own
   boundary's, which must remove look-alikes from outside);
2. otherwise our own checks: DKIM with dkimpy (every signature), SPF with pyspf, and
   DMARC (RFC 7489) here: the policy record from DNS, alignment by organisational
   domain from the public suffix list (publicsuffixlist). SPF needs the connecting
   client: the SMTP listener knows it; for mail read over IMAP it is the client named
   in the topmost ``Received`` header a trusted server added.

(authheaders does DMARC too, but rebuilds the public suffix list on every message:
200 ms each, which capped ingest at a few emails a second.)
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

import authres  # type: ignore[import-untyped]
import dkim  # type: ignore[import-untyped]
import dns.exception
import dns.resolver
import spf  # type: ignore[import-untyped]
from publicsuffixlist import PublicSuffixList

from bot.mail import Peer, SenderAuth, SenderTrust

log = logging.getLogger(__name__)
_RECEIVED = re.compile(r"^\s*from\s+(?P<helo>\S+)\s+\([^)]*?\[(?:IPv6:)?(?P<ip>[0-9a-fA-F:.]+)\]"
                       r"\).*?\bby\s+(?P<by>[^\s;]+)", re.IGNORECASE | re.DOTALL)
_RECEIVED_BY = re.compile(r"\bby\s+(?P<by>[^\s;]+)", re.IGNORECASE)
_METHODS = ("dkim", "spf", "dmarc")
_PSL = PublicSuffixList()  # loaded once: the list is large
DNS_TIMEOUT = 5.0


def use_dns_server(host: str, port: int) -> None:
    """Send every DNS query of this process (DKIM keys, SPF, DMARC) to ``host:port``."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    dns.resolver.default_resolver = resolver


CHECK_THREADS = 4
DNS_CACHED = 10_000  # answers kept (each for its TTL): a burst from one domain asks once


class SenderAuthenticator:
    def __init__(self, *, trusted_hosts: Sequence[str] = ()) -> None:
        self.trusted = {h.lower() for h in trusted_hosts}
        self._threads = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="sender-check")
        # DKIM keys, SPF and DMARC records, for as long as their TTLs allow: every
        # library here asks through dnspython's default resolver.
        resolver = dns.resolver.get_default_resolver()
        if resolver.cache is None:
            resolver.cache = dns.resolver.LRUCache(DNS_CACHED)

    async def check(self, raw: bytes, peer: Peer | None = None) -> SenderAuth:
        # The libraries ask DNS synchronously: keep them off the event loop, on threads of
        # their own (few: the checks are mostly CPU and cached answers, and more threads
        # than that only fight the event loop for the interpreter).
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self.verdict, raw, peer)

    def verdict(self, raw: bytes, peer: Peer | None = None) -> SenderAuth:
        headers = BytesHeaderParser().parsebytes(raw)
        senders = [a for _, a in getaddresses([str(v) for v in headers.get_all("From", [])])
                   if "@" in a]
        if len(senders) != 1:
            return SenderAuth(SenderTrust.UNVERIFIED, "no single From address to authenticate")
        from_domain = senders[0].rpartition("@")[2].lower()
        # Mail that reached our own listener passed no trusted server: every
        # Authentication-Results in it was written by the sender, so none is believed.
        results = None if peer is not None else self._trusted_results(headers)
        source = "trusted server"
        if results is None:
            source = "checked here"
            peer = peer or self._peer_from_received(headers)
            try:
                results = self._check_here(raw, peer, from_domain)
            except Exception as exc:  # a library failing on hostile input is a failed check
                log.warning("sender authentication failed to run: %s", exc)
                return SenderAuth(SenderTrust.UNVERIFIED, f"could not be checked ({exc})")
        summary = ", ".join(f"{m.upper()} {results.get(m, ('none', ''))[0]}" for m in _METHODS)
        trust = SenderTrust.VERIFIED if _authenticated(results, from_domain) \
            else SenderTrust.UNVERIFIED
        return SenderAuth(trust, f"{summary} ({source})")

    def _trusted_results(self, headers: Any) -> dict[str, tuple[str, str]] | None:
        """The results a trusted server added: the topmost ones, above the first
        ``Received`` header that a host outside the trusted ones wrote (what stands below
        it came from outside, where anyone can write a look-alike)."""
        values = []
        for name, value in headers.items():
            lowered = name.lower()
            if lowered == "received":
                found = _RECEIVED_BY.search(str(value))
                if not found or found["by"].lower() not in self.trusted:
                    break
            elif lowered == "authentication-results":
                values.append(value)
        for value in values:  # topmost first: the one our boundary added
            try:
                header = authres.AuthenticationResultsHeader.parse_value(str(value))
            except Exception:
                continue
            if str(header.authserv_id).lower() in self.trusted:
                return _results(header)
        return None

    def _peer_from_received(self, headers: Any) -> Peer | None:
        for value in headers.get_all("Received", []):
            found = _RECEIVED.search(str(value))
            if found and found["by"].lower() in self.trusted:
                mail_from = str(headers.get("Return-Path", "")).strip().strip("<>")
                return Peer(found["ip"], found["helo"], mail_from)
        return None

    def _check_here(self, raw: bytes, peer: Peer | None, from_domain: str
                    ) -> dict[str, tuple[str, str]]:
        results = {"dkim": _dkim(raw, from_domain)}
        if peer is not None and peer.ip:
            results["spf"] = _spf(peer)
        results["dmarc"] = _dmarc(from_domain, results)
        return results


def _results(header: Any) -> dict[str, tuple[str, str]]:
    """{method: (result, the domain it vouches for)}, first result per method."""
    found: dict[str, tuple[str, str]] = {}
    for result in header.results:
        method = str(result.method).lower()
        if method not in _METHODS or method in found:
            continue
        domain = ""
        for prop in result.properties:
            if (prop.type, prop.name) in (("header", "d"), ("smtp", "mailfrom"),
                                          ("header", "from")):
                domain = str(prop.value).rpartition("@")[2].lower()
        found[method] = (str(result.result).lower(), domain)
    return found


def _org(domain: str) -> str:
    """The organisational domain (``mail.example.co.uk`` -> ``example.co.uk``)."""
    return str(_PSL.privatesuffix(domain) or domain)


def _aligned(domain: str, from_domain: str, strict: bool = False) -> bool:
    if not domain:
        return False
    return domain == from_domain if strict else _org(domain) == _org(from_domain)


def _dkim(raw: bytes, from_domain: str) -> tuple[str, str]:
    """(pass|fail|none, d=): an aligned valid signature if there is one, else any valid
    one, else the first failure."""
    verifier = dkim.DKIM(raw, timeout=DNS_TIMEOUT)
    signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    found = ("none", "")
    for index in range(len(signatures)):
        try:
            valid = verifier.verify(idx=index)
        except (dkim.DKIMException, dns.exception.DNSException):
            valid = False
        domain = verifier.signature_fields.get(b"d", b"").decode("ascii", "replace").lower()
        if valid and _aligned(domain, from_domain):
            return ("pass", domain)
        if valid:
            found = ("pass", domain)
        elif found[0] == "none":
            found = ("fail", domain)
    return found


def _spf(peer: Peer) -> tuple[str, str]:
    sender = peer.mail_from or f"postmaster@{peer.helo}"
    try:
        result, _ = spf.check2(i=peer.ip, s=sender, h=peer.helo, timeout=DNS_TIMEOUT)
    except Exception as exc:  # pyspf raises for malformed input it cannot judge
        log.info("SPF check of %s failed to run: %s", sender, exc)
        result = "permerror"
    return (str(result), sender.rpartition("@")[2].lower())


_DMARC_CACHE: dict[str, tuple[float, dict[str, str] | None]] = {}
DMARC_CACHE_SECONDS = 300.0  # a burst from one domain asks DNS once


def _dmarc_record(domain: str) -> dict[str, str] | None:
    cached = _DMARC_CACHE.get(domain)
    if cached is not None and time.monotonic() - cached[0] < DMARC_CACHE_SECONDS:
        return cached[1]
    record = _lookup_dmarc(domain)
    if len(_DMARC_CACHE) > 10_000:
        _DMARC_CACHE.clear()
    _DMARC_CACHE[domain] = (time.monotonic(), record)
    return record


def _lookup_dmarc(domain: str) -> dict[str, str] | None:
    """The DMARC policy for ``domain``: its own record, else its organisation's."""
    for name in dict.fromkeys((domain, _org(domain))):
        try:
            answer = dns.resolver.resolve(f"_dmarc.{name}", "TXT", lifetime=DNS_TIMEOUT)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        records = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
        if len(records) == 1:  # RFC 7489 6.6.3: none or several mean no policy
            return {k.strip().lower(): v.strip() for k, _, v in
                    (t.partition("=") for t in records[0].split(";")) if k.strip()}
    return None


def _dmarc(from_domain: str, results: dict[str, tuple[str, str]]) -> tuple[str, str]:
    try:
        record = _dmarc_record(from_domain)
    except dns.exception.DNSException:
        return ("temperror", from_domain)
    if record is None:
        return ("none", from_domain)
    for method, tag in (("dkim", "adkim"), ("spf", "aspf")):
        result, domain = results.get(method, ("none", ""))
        if result == "pass" and _aligned(domain, from_domain, record.get(tag) == "s"):
            return ("pass", from_domain)
    return ("fail", from_domain)


def _authenticated(results: dict[str, tuple[str, str]], from_domain: str) -> bool:
    dmarc = results.get("dmarc", ("none", ""))[0]
    if dmarc == "pass":
        return True
    if dmarc != "none":  # fail, temperror, permerror: the domain's own policy says no
        return False
    return any(results.get(m, ("none", ""))[0] == "pass"
               and _aligned(results[m][1], from_domain) for m in ("dkim", "spf"))
