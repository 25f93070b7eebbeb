"""Shared fixtures: every test starts with no current dspex session."""

from __future__ import annotations
