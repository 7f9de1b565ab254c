"""Rules that turn readings into alarm events; one module per rule family."""

from blackbox.rules.engine import RuleEngine

__all__ = ["RuleEngine"]
