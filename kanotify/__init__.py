"""kanotify: an idempotent state-transition engine for keepalived notify scripts."""

__version__ = "0.1.0"
