"""Every Redis key Switchboard uses, built here and nowhere else, under one prefix."""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str = "sb") -> None:
        self.prefix = prefix

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # address book
    def address_index(self) -> str:
        """hash: canonical address -> identity id (one HGET per look-up)."""
        return self._k("addr")

    def identity(self, identity_id: str) -> str:
        """hash: canonical address -> mapping record (provenance, verified, added_at)."""
        return self._k("id", identity_id)

    # conversations and history
    def conversation_entries(self, conversation_id: str) -> str:
        """hash: entry id -> entry record; HSETNX makes an append happen once."""
        return self._k("conv", conversation_id, "entries")

    def conversation_timeline(self, conversation_id: str) -> str:
        """sorted set: entry id scored by its time."""
        return self._k("conv", conversation_id, "timeline")

    def history_index(self) -> str:
        """sorted set: every ``conversation id / entry id`` scored by time (retention
        finds the oldest entries here, in batches)."""
        return self._k("hist-all")

    def reply_tokens_of(self, address: str) -> str:
        """set: the reply tokens issued to ``address`` (erasure revokes them)."""
        return self._k("tokens-of", address)

    def person_history(self, address: str) -> str:
        """sorted set: ``conversation id / entry id`` scored by time, per participant."""
        return self._k("hist", address)

    def message_index(self) -> str:
        """hash: email Message-ID -> conversation id (threading by In-Reply-To/References)."""
        return self._k("msgid")

    def conversation_threads(self, conversation_id: str) -> str:
        """hash: chat target key -> the conversation's thread root there (ChatRef)."""
        return self._k("conv", conversation_id, "threads")

    def posts(self) -> str:
        """hash: ``message key|target key`` -> where it was posted (ChatRef).

        Written right after a post succeeds and read before posting, so a re-read
        email or a retried job never posts twice."""
        return self._k("posts")

    def room_latest(self) -> str:
        """hash: ``network:room`` -> ``conversation/entry`` of the latest post there (what
        a command typed in a direct chat, outside any thread, is about)."""
        return self._k("room-latest")

    def posting(self) -> str:
        """hash: ``message key|target key`` -> when a post was begun; removed when it is
        recorded. One left behind means a process stopped between the network's answer
        and the record: the network is asked before posting again."""
        return self._k("posting")

    def chat_messages(self) -> str:
        """hash: ``network:room:message`` -> ``conversation id/entry id`` of what it shows."""
        return self._k("chatmsg")

    def reply_token(self, token: str) -> str:
        """string with expiry: the conversation and recipient a reply address belongs to."""
        return self._k("token", token)

    def verification(self, user: str) -> str:
        """string with expiry: a chat user's pending email verification."""
        return self._k("verify", user)

    def rate(self, name: str, bucket: int) -> str:
        """counter with expiry: events for ``name`` in one time window."""
        return self._k("rate", name, str(bucket))

    def claim(self, name: str) -> str:
        """string with expiry: the worker currently sending a delivery."""
        return self._k("claim", name)

    def queue_name(self) -> str:
        """The RQ queue's name (RQ adds its own ``rq:`` keys)."""
        return f"{self.prefix}-jobs"

    # ingest
    def imap_checkpoint(self, account: str, mailbox: str) -> str:
        """hash: uidvalidity, last_uid of one watched mailbox."""
        return self._k("imap", account, mailbox)

    def ingest_refusals(self) -> str:
        """list: emails that could not be bridged, with the reason, newest last."""
        return self._k("ingest", "refused")

    def set_aside(self, key: str) -> str:
        """string with expiry: the raw bytes of a message set aside after failures."""
        return self._k("ingest", "aside", key)

    def ingest_failures(self, key: str) -> str:
        """counter with expiry: how often one message failed to be bridged."""
        return self._k("ingest", "failures", key)

    def audit(self) -> str:
        """stream: outgoing mail and refused actions (who, what, when); people in it are
        named by pseudonym (``person:TOKEN``), never by address."""
        return self._k("audit")

    def audit_people(self) -> str:
        """hash: a person's canonical address -> their audit pseudonym (forget drops it)."""
        return self._k("audit", "people")

    def audit_pseudonyms(self) -> str:
        """hash: audit pseudonym -> the canonical address (forget drops it)."""
        return self._k("audit", "pseudonyms")

    def erasure_key(self) -> str:
        """string: the secret that keys erasure receipts (a digest that names no one)."""
        return self._k("erasure", "key")

    def lease(self, name: str) -> str:
        """string with expiry: which process holds a mailbox."""
        return self._k("lease", name)

    # matrix
    def matrix_session(self, user_id: str) -> str:
        return self._k("matrix", "session", user_id)

    def matrix_sync(self, user_id: str) -> str:
        """string: the sync token after the last batch the sync loop handled."""
        return self._k("matrix", "sync", user_id)

    def matrix_outbox(self) -> str:
        """list: posts handed by a process without the bot's keys to the one with them."""
        return self._k("matrix", "outbox")

    def matrix_outbox_answer(self, request_id: str) -> str:
        """list with a TTL: the key holder's answer to one handed post."""
        return self._k("matrix", "outbox", request_id)

    def matrix_dm_rooms(self) -> str:
        """hash: Matrix user id -> the bot's direct-message room with them."""
        return self._k("matrix", "dm")

    # deliveries
    def delivery(self, delivery_id: str) -> str:
        return self._k("dlv", delivery_id)

    def delivery_log(self, delivery_id: str) -> str:
        """list: every state change of one delivery, oldest first."""
        return self._k("dlv", delivery_id, "log")

    def deliveries_in_state(self, state: str) -> str:
        """sorted set: delivery ids currently in ``state``, scored by creation time."""
        return self._k("dlv-state", state)

    def deliveries_by_sender(self, address: str) -> str:
        return self._k("dlv-from", address)

    # metering, charges, customers and their accounts
    def usage(self, customer: str, period: str) -> str:
        """hash: measure or ``tx:<service>`` -> total for one customer in one day or month."""
        return self._k("usage", customer, period)

    def usage_held(self, customer: str) -> str:
        """counter: bytes of history held for one customer now (the standing total)."""
        return self._k("usage-held", customer)

    def usage_days(self, customer: str, month: str) -> str:
        """set: the days of ``month`` with usage, for the report's chart."""
        return self._k("usage-days", customer, month)

    def transactions(self, customer: str) -> str:
        """stream: one customer's transactions, newest last (capped)."""
        return self._k("tx", customer)

    def metered_customers(self) -> str:
        """set: every customer with recorded usage."""
        return self._k("customers", "metered")

    def customer(self, customer: str) -> str:
        """hash: a customer's name, billing address, report and payment choices."""
        return self._k("customer", customer)

    def customers(self) -> str:
        """set: configured customers."""
        return self._k("customers", "configured")

    def report_pages(self) -> str:
        """hash: unguessable web token -> customer."""
        return self._k("report-pages")

    def charges(self, customer: str, period: str) -> str:
        """string: the period's charges as computed last, with their inputs (JSON)."""
        return self._k("charges", customer, period)

    def report_mark(self, customer: str, period: str) -> str:
        """hash: what the period's report job has done (emailed at, warnings)."""
        return self._k("report", customer, period)

    def report_sending(self, customer: str, period: str) -> str:
        """string with expiry: a report email being sent now (one sender at a time)."""
        return self._k("report", customer, period, "sending")

    def account_balance(self, customer: str) -> str:
        """integer: the account's balance in minor units (cents)."""
        return self._k("account", customer, "balance")

    def account_ledger(self, customer: str) -> str:
        """list: ledger entries (JSON), oldest first."""
        return self._k("account", customer, "ledger")

    def account_debits(self, customer: str) -> str:
        """hash: period -> its debit entry; HSETNX makes one debit per period."""
        return self._k("account", customer, "debits")

    # Slack installs
    def appservice_transaction(self, txn: str) -> str:
        """string with expiry: a transaction the homeserver pushed, handled."""
        return self._k("matrix", "as-txn", txn)

    def ghost(self, email: str) -> str:
        """hash: an email sender's ghost on Matrix (user id, display name given)."""
        return self._k("matrix", "ghost", email.lower())

    def ghost_rooms(self, email: str) -> str:
        """set: the rooms an email sender's ghost has joined."""
        return self._k("matrix", "ghost-rooms", email.lower())

    def pace(self, name: str) -> str:
        """string with expiry: when the next turn of a paced call is (storage/pacing.py)."""
        return self._k("pace", name)

    def oauth_login(self, name: str) -> str:
        """hash: a mailbox's OAuth2 login, its tokens sealed (storage/logins.py)."""
        return self._k("oauth2", name)

    def oauth_lock(self, name: str) -> str:
        """string with expiry: the process asking the token endpoint for ``name``."""
        return self._k("oauth2", name, "lock")

    def slack_installations(self) -> str:
        """hash: team id -> its installation (JSON), saved by the OAuth install flow."""
        return self._k("slack", "installs")

    def slack_oauth_state(self, state: str) -> str:
        """string with a TTL: an OAuth state issued and not yet used."""
        return self._k("slack", "state", state)

    def slack_seen(self, key: str) -> str:
        """string with a TTL: a Slack delivery already handled (Socket Mode re-delivers)."""
        return self._k("slack", "seen", key)

    # routes from chat, held mail, process health
    def routes(self) -> str:
        """hash: route address -> route record (the routes added from chat)."""
        return self._k("routes")

    def routes_allowed(self) -> str:
        """hash: route address -> the senders admins allowed past its holds (JSON list)."""
        return self._k("routes-allowed")

    def routes_version(self) -> str:
        """counter: changes with every route change; each process compares it each second."""
        return self._k("routes-version")

    def search_index(self) -> str:
        """the RediSearch index of every history entry's document."""
        return self._k("search")

    def search_doc_prefix(self) -> str:
        return self._k("sdoc") + ":"

    def search_doc(self, conversation_id: str, entry_id: str) -> str:
        """hash: an entry's search document (its words, filters and viewer tokens);
        ``entry_id`` "" gives the conversation's prefix of them."""
        return f"{self.search_doc_prefix()}{conversation_id}/{entry_id}"

    def conversation_viewers(self, conversation_id: str) -> str:
        """set: the viewer tokens of a conversation (its people, its rooms)."""
        return self._k("conv", conversation_id, "viewers")

    def blocks(self) -> str:
        """hash: "scope|who" (a route address or *, an address or @domain) -> block record."""
        return self._k("blocks")

    def blocks_stopped(self) -> str:
        """hash: "scope|who" -> how many emails the block stopped."""
        return self._k("blocks-stopped")

    def blocks_version(self) -> str:
        """counter: changes when a block is made or lifted; each process compares it."""
        return self._k("blocks-version")

    def held(self, held_id: str) -> str:
        """hash with expiry: a held email's record, decision and bytes."""
        return self._k("held", held_id)

    def held_waiting(self) -> str:
        """sorted set: held email ids not decided yet, scored by when they were held."""
        return self._k("held-waiting")

    def held_in_room(self, network: str, room: str) -> str:
        """sorted set: the same, of one room."""
        return self._k("held-room", network, room)

    def beats(self) -> str:
        """hash: process -> its latest health checks and when (JSON)."""
        return self._k("beats")

