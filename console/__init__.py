"""The analyst console and the HTML report (zonewatch console / report)."""
