"""Saved forensic queries shipped with zonewatch (a package so the .sql files install with it)."""
