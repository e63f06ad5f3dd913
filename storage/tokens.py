"""Reply tokens: the unguessable part of ``reply+TOKEN@domain``, bound to one
conversation and one recipient, expiring on their own (Redis TTL)."""

from __future__ import annotations

import base64
import json
import secrets

from bot.model import Address
from storage.codec import address_from
from storage.connection import RedisBacked, text


def new_token() -> str:
    # 120 random bits in lowercase base32: survives mail systems that fold case.
    return base64.b32encode(secrets.token_bytes(15)).decode().lower()


class RedisTokens(RedisBacked):
    async def issue(self, conversation_id: str, recipient: Address, ttl: int) -> str:
        token = new_token()
        issued = self.keys.reply_tokens_of(str(recipient))
        async with self._translated("issuing a reply token"), \
                self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.reply_token(token),
                     json.dumps([conversation_id, str(recipient)]), ex=ttl)
            # Which tokens a person was given, so erasing them revokes every one.
            pipe.sadd(issued, token)
            pipe.expire(issued, ttl)
            await pipe.execute()
        return token

    async def resolve(self, token: str) -> tuple[str, Address] | None:
        """(conversation id, recipient) for a live token; None if unknown or expired."""
        if not token.isalnum() or len(token) > 64:
            return None
        async with self._translated("checking a reply token"):
            found = await self.redis.get(self.keys.reply_token(token.lower()))
        if found is None:
            return None
        cid, recipient = json.loads(text(found))
        return cid, address_from(recipient)
