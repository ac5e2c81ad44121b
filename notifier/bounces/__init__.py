"""Bounce handling's pure core: per-message return-path tokens and bounce report parsing.

Nothing here does I/O: the edges read the raw message (stdin, IMAP), keep the Redis index from
message id to outbox key, and decide what a report does to a message.
"""
