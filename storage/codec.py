"""JSON forms of the domain records as Redis stores them."""

from __future__ import annotations

import json
from typing import Any

from bot.model import (
    Address,
    Answering,
    AttachmentRef,
    Carrier,
    ChatRef,
    Delivery,
    DeliveryState,
    EntryKind,
    HistoryEntry,
    Mapping,
    Network,
    Provenance,
    ReplyContext,
    StateChange,
)


def address_from(text: str) -> Address:
    network, _, value = text.partition(":")
    return Address(Network(network), value)


def dump_mapping(mapping: Mapping) -> str:
    return json.dumps({"p": mapping.provenance.value, "v": mapping.verified,
                       "t": mapping.added_at}, separators=(",", ":"))


def load_mapping(address: str, text: str) -> Mapping:
    data = json.loads(text)
    return Mapping(address_from(address), Provenance(data["p"]), bool(data["v"]), float(data["t"]))


def dump_entry(entry: HistoryEntry) -> str:
    data: dict[str, Any] = {
        "id": entry.id, "c": entry.conversation_id, "k": entry.kind.value,
        "from": str(entry.sender), "to": [str(a) for a in entry.recipients],
        "at": entry.at, "text": entry.text,
    }
    if entry.subject:
        data["subj"] = entry.subject
    if entry.attachments:
        data["att"] = [[a.filename, a.content_type, a.size, a.url] for a in entry.attachments]
    if entry.meta:
        data["meta"] = entry.meta
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def load_entry(text: str) -> HistoryEntry:
    d = json.loads(text)
    return HistoryEntry(
        id=d["id"], conversation_id=d["c"], kind=EntryKind(d["k"]),
        sender=address_from(d["from"]), recipients=tuple(address_from(a) for a in d["to"]),
        at=float(d["at"]), text=d["text"], subject=d.get("subj", ""),
        attachments=tuple(AttachmentRef(a[0], a[1], int(a[2]), a[3]) for a in d.get("att", [])),
        meta=dict(d.get("meta", {})),
    )


def dump_change(change: StateChange) -> str:
    return json.dumps({"s": change.state.value, "t": change.at, "n": change.note},
                      separators=(",", ":"), ensure_ascii=False)


def load_change(text: str) -> StateChange:
    d = json.loads(text)
    return StateChange(DeliveryState(d["s"]), float(d["t"]), d.get("n", ""))


def delivery_fields(delivery: Delivery) -> dict[str, str]:
    return {
        "id": delivery.id, "conversation": delivery.conversation_id,
        "sender": str(delivery.sender), "recipient": str(delivery.recipient),
        "text": delivery.text, "state": delivery.state.value,
        "created": repr(delivery.created_at), "attempts": str(delivery.attempts),
        "meta": dump_context(delivery.context),
    }


def dump_context(ctx: ReplyContext) -> str:
    """As the flat record it has always been stored as (older deliveries read the same)."""
    record = {"by": ctx.carrier.value, "answering": ctx.answering.value, "entry": ctx.entry,
              "email": ctx.email.value if ctx.email else "", "person": ctx.person,
              "replier_name": ctx.replier_name, "subject": ctx.subject}
    if ctx.cc:
        record["cc"] = " ".join(a.value for a in ctx.cc)
    if ctx.where is not None:
        record.update(where_network=ctx.where.network.value, where_room=ctx.where.room,
                      where_thread=ctx.where.thread)
    return json.dumps(record, ensure_ascii=False)


def load_context(text: str) -> ReplyContext:
    d = json.loads(text)
    where = None
    if d.get("where_room"):
        thread = d.get("where_thread", "")
        where = ChatRef(Network(d["where_network"]), d["where_room"], thread, thread)
    answering = d.get("answering") or ("email" if d.get("entry") else "new")
    return ReplyContext(
        carrier=Carrier(d.get("by") or "chat"), answering=Answering(answering),
        entry=d.get("entry", ""), email=Address.email(d["email"]) if d.get("email") else None,
        person=d.get("person", ""), replier_name=d.get("replier_name", ""),
        subject=d.get("subject", ""), where=where,
        cc=tuple(Address.email(a) for a in d.get("cc", "").split()))


def load_delivery(fields: dict[str, str], log: list[str]) -> Delivery:
    return Delivery(
        id=fields["id"], conversation_id=fields["conversation"],
        sender=address_from(fields["sender"]), recipient=address_from(fields["recipient"]),
        text=fields["text"], state=DeliveryState(fields["state"]),
        created_at=float(fields["created"]), changes=tuple(load_change(c) for c in log),
        attempts=int(fields.get("attempts", "0")),
        context=load_context(fields.get("meta", "{}")),
    )
