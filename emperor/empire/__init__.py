"""The emperor process: watch a directory of vassal ini files and keep one vassal per file.

Runs in the emperor only; it never imports ``emperor.vassal`` (vassals are exec'd).
"""
