"""Spore: a TCP tunnel on Twisted that speaks bore's wire protocol."""

__version__ = "0.1.0"
