"""berth tui: the Textual admin console (a client of the admin API)."""
