"""Test and demo harness: a throw-away PKI and a local Prosody run as a child process."""
