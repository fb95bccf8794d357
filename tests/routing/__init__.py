"""Tests of hostname routing: CA, route table, proxy, daemon, CLI."""
