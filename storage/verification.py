"""Codes that prove an email address belongs to a chat user (`link` / `link verify`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from bot.model import Address
from storage.codec import address_from
from storage.connection import RedisBacked, text

MAX_ATTEMPTS = 5


def _digest(user: Address, code: str) -> str:
    return hashlib.sha256(f"{user}|{code}".encode()).hexdigest()


class RedisVerifications(RedisBacked):
    async def issue(self, user: Address, email: Address, ttl: int) -> str:
        """A new 6-digit code for ``user`` to prove ``email``; replaces an earlier one."""
        code = f"{secrets.randbelow(10**6):06d}"
        record = json.dumps({"email": str(email), "digest": _digest(user, code), "tries": 0})
        async with self._translated("issuing a verification code"):
            await self.redis.set(self.keys.verification(str(user)), record, ex=ttl)
        return code

    async def check(self, user: Address, code: str) -> Address | str:
        """The verified email, or why not: no pending code, a wrong code, too many tries."""
        key = self.keys.verification(str(user))
        async with self._translated("checking a verification code"):
            found = await self.redis.get(key)
            if found is None:
                return "there is no pending link for you (it may have expired): start with " \
                       "`link <email>`"
            record = json.loads(text(found))
            if not hmac.compare_digest(record["digest"], _digest(user, code.strip())):
                record["tries"] += 1
                if record["tries"] >= MAX_ATTEMPTS:
                    await self.redis.delete(key)
                    return "that code is wrong, and that was the last try: start again with " \
                           "`link <email>`"
                ttl = await self.redis.pttl(key)
                await self.redis.set(key, json.dumps(record), px=max(ttl, 1))
                return "that code is wrong (check the latest email, or start again)"
            await self.redis.delete(key)
        return address_from(record["email"])
