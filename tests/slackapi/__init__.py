"""Slack's wire contract, reproduced locally: the Web API server and a signed-request sender."""
