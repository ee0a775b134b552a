"""Test helpers for kanotify and its plugin authors (also a pytest plugin).

Filled in by the hook-plugin work: builders for configs and contexts, and
fixtures that run the engine against the in-memory backend without root.
"""

from __future__ import annotations
