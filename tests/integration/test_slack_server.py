"""The local Slack server answers Slack's real client library as Slack does.

slack_sdk is what Switchboard's Slack bridge uses, so these tests pin the wire
contract from the client's side: shapes, errors, 429 handling, the upload pair and
request signing.
"""

from __future__ import annotations

import json

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.slackapi.client import SlackControl, sign
from tests.slackapi.server import Workspace

TOKEN = Workspace().bot_token


def client(slack: SlackControl, token: str = TOKEN) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=slack.api_url)


async def test_auth_test_reports_the_bot_and_its_scopes(slack: SlackControl) -> None:
    answer = await client(slack).auth_test()
    assert answer["ok"] and answer["user_id"] == Workspace().bot_user_id
    assert "chat:write" in answer.headers["x-oauth-scopes"]


async def test_bad_and_missing_tokens(slack: SlackControl) -> None:
    with pytest.raises(SlackApiError) as bad:
        await client(slack, "xoxb-wrong").auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    async with slack.session.post(slack.api_url + "auth.test") as r:
        assert r.status == 200
        assert await r.json() == {"ok": False, "error": "not_authed"}


async def test_missing_scope_names_what_is_needed(slack: SlackControl) -> None:
    await slack.set_scopes(["chat:write"])
    with pytest.raises(SlackApiError) as refused:
        await client(slack).users_lookupByEmail(email="alice@example.com")
    assert refused.value.response["error"] == "missing_scope"
    assert refused.value.response["needed"] == "users:read.email"
    assert refused.value.response["provided"] == "chat:write"


async def test_post_message_in_a_thread_with_blocks(slack: SlackControl) -> None:
    await slack.add_channel("C0GENERAL1", "general", [])
    web = client(slack)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Hello*"}}]
    root = await web.chat_postMessage(channel="C0GENERAL1", text="Hello", blocks=blocks)
    reply = await web.chat_postMessage(channel="C0GENERAL1", text="Reply",
                                       thread_ts=root["ts"])
    assert reply["message"]["thread_ts"] == root["ts"]
    messages = await slack.messages("C0GENERAL1")
    assert [(m["text"], m["thread_ts"]) for m in messages] == [("Hello", None),
                                                              ("Reply", root["ts"])]
    assert messages[0]["blocks"] == blocks


async def test_post_message_errors(slack: SlackControl) -> None:
    await slack.add_channel("C0GENERAL1", "general", [])
    await slack.add_channel("C0PRIVATE1", "private", [], bot_is_member=False)
    web = client(slack)
    cases = [
        ({"channel": "C0NOWHERE1", "text": "x"}, "channel_not_found"),
        ({"channel": "C0PRIVATE1", "text": "x"}, "not_in_channel"),
        ({"channel": "C0GENERAL1"}, "no_text"),
        ({"channel": "C0GENERAL1", "text": "x",
          "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        ({"channel": "C0GENERAL1", "text": "x",
          "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "a" * 3001}}]},
         "invalid_blocks"),
        ({"channel": "C0GENERAL1", "text": "x", "thread_ts": "1.000001"}, "thread_not_found"),
    ]
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as refused:
            await web.chat_postMessage(**kwargs)  # type: ignore[arg-type]
        assert refused.value.response["error"] == error, kwargs
    assert await slack.messages() == []


async def test_long_text_is_cut_at_40000_characters(slack: SlackControl) -> None:
    await slack.add_channel("C0GENERAL1", "general", [])
    await client(slack).chat_postMessage(channel="C0GENERAL1", text="x" * 45000)
    (message,) = await slack.messages()
    assert len(message["text"]) == 40000


async def test_form_encoded_calls_with_token_in_the_body(slack: SlackControl) -> None:
    await slack.add_channel("C0GENERAL1", "general", [])
    form = {"token": TOKEN, "channel": "C0GENERAL1", "text": "plain form"}
    async with slack.session.post(slack.api_url + "chat.postMessage", data=form) as r:
        answer = await r.json()
    assert answer["ok"] and answer["channel"] == "C0GENERAL1"


async def test_json_body_needs_the_authorization_header(slack: SlackControl) -> None:
    await slack.add_channel("C0GENERAL1", "general", [])
    body = {"token": TOKEN, "channel": "C0GENERAL1", "text": "json"}
    async with slack.session.post(slack.api_url + "chat.postMessage", json=body) as r:
        assert (await r.json())["error"] == "not_authed"


async def test_rate_limit_answers_429_with_retry_after(slack: SlackControl) -> None:
    await slack.add_channel("C0GENERAL1", "general", [])
    await slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    with pytest.raises(SlackApiError) as limited:
        await client(slack).chat_postMessage(channel="C0GENERAL1", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.response["error"] == "ratelimited"
    # slack_sdk's own retry handler honours Retry-After and then succeeds.
    await slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    patient = client(slack)
    patient.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    answer = await patient.chat_postMessage(channel="C0GENERAL1", text="after the wait")
    assert answer["ok"]
    assert [m["text"] for m in await slack.messages()] == ["after the wait"]


async def test_users_presence_and_direct_messages(slack: SlackControl) -> None:
    await slack.add_user("U0ALICE001", "alice", "Alice@Example.com", presence="away")
    web = client(slack)
    found = await web.users_lookupByEmail(email="alice@example.com")
    assert found["user"]["id"] == "U0ALICE001"
    assert found["user"]["profile"]["email"] == "Alice@Example.com"
    with pytest.raises(SlackApiError) as missing:
        await web.users_lookupByEmail(email="nobody@example.com")
    assert missing.value.response["error"] == "users_not_found"
    assert (await web.users_getPresence(user="U0ALICE001"))["presence"] == "away"
    await slack.set_presence("U0ALICE001", "active")
    assert (await web.users_getPresence(user="U0ALICE001"))["presence"] == "active"
    info = await web.users_info(user="U0ALICE001")
    assert info["user"]["name"] == "alice"
    opened = await web.conversations_open(users="U0ALICE001")
    again = await web.conversations_open(users="U0ALICE001")
    assert opened["channel"]["id"].startswith("D")
    assert again["channel"]["id"] == opened["channel"]["id"] and again["already_open"]
    await web.chat_postMessage(channel=opened["channel"]["id"], text="hi Alice")
    assert [m["text"] for m in await slack.messages(opened["channel"]["id"])] == ["hi Alice"]


async def test_ephemeral_and_update(slack: SlackControl) -> None:
    await slack.add_user("U0BOB00001", "bob", "bob@example.com")
    await slack.add_channel("C0GENERAL1", "general", ["U0BOB00001"])
    web = client(slack)
    eph = await web.chat_postEphemeral(channel="C0GENERAL1", user="U0BOB00001", text="only bob")
    assert eph["message_ts"]
    with pytest.raises(SlackApiError) as outsider:
        await web.chat_postEphemeral(channel="C0GENERAL1", user="U0NOTHERE1", text="x")
    assert outsider.value.response["error"] == "user_not_in_channel"
    posted = await web.chat_postMessage(channel="C0GENERAL1", text="draft")
    await web.chat_update(channel="C0GENERAL1", ts=posted["ts"], text="final")
    messages = await slack.messages("C0GENERAL1")
    assert [(m["text"], m["ephemeral_to"], m["edited"]) for m in messages] == [
        ("only bob", "U0BOB00001", False), ("final", None, True)]
    with pytest.raises(SlackApiError) as gone:
        await web.chat_update(channel="C0GENERAL1", ts="1.000009", text="x")
    assert gone.value.response["error"] == "message_not_found"


async def test_views_open_needs_a_fresh_trigger(slack: SlackControl) -> None:
    view = {"type": "modal", "callback_id": "reply", "title": {"type": "plain_text",
                                                                "text": "Reply in chat"},
            "blocks": []}
    web = client(slack)
    trigger = await slack.new_trigger()
    opened = await web.views_open(trigger_id=trigger, view=view)
    assert opened["view"]["id"].startswith("V")
    with pytest.raises(SlackApiError) as reused:
        await web.views_open(trigger_id=trigger, view=view)
    assert reused.value.response["error"] == "invalid_trigger_id"
    long_title = {**view, "title": {"type": "plain_text", "text": "x" * 25}}
    with pytest.raises(SlackApiError) as refused:
        await web.views_open(trigger_id=await slack.new_trigger(), view=long_title)
    assert refused.value.response["error"] == "invalid_arguments"


async def test_external_upload_pair_shares_the_file(slack: SlackControl) -> None:
    await slack.add_channel("C0GENERAL1", "general", [])
    web = client(slack)
    content = b"%PDF-1.4 quarterly report" * 100
    root = await web.chat_postMessage(channel="C0GENERAL1", text="mail")
    # slack_sdk's high-level helper drives both calls and the upload itself.
    await web.files_upload_v2(channel="C0GENERAL1", content=content, filename="report.pdf",
                              title="Quarterly report", thread_ts=root["ts"])
    state = await slack.state()
    (record,) = state["files"]
    assert record["name"] == "report.pdf" and record["size"] == len(content)
    assert await slack.file_content(record["id"]) == content
    shared = [m for m in state["messages"] if m["files"]]
    assert shared[0]["thread_ts"] == root["ts"]
    assert shared[0]["files"][0]["title"] == "Quarterly report"


async def test_completing_an_upload_that_never_arrived_fails(slack: SlackControl) -> None:
    web = client(slack)
    url = await web.files_getUploadURLExternal(filename="a.txt", length=3)
    with pytest.raises(SlackApiError) as refused:
        await web.files_completeUploadExternal(files=[{"id": url["file_id"]}])
    assert refused.value.response["error"] == "file_not_found"


def test_signed_requests_verify_with_slacks_own_verifier() -> None:
    body = json.dumps({"type": "event_callback"}).encode()
    headers = sign("s3cret", body)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    assert not verifier.is_valid_request(body + b" ", headers)
