"""Source positions as plain data: offset ranges, position codecs and offset stores.

This package imports nothing else of ours, so every layer can depend on it.
"""
