"""berth engines: one subprocess per deployment, where torch lives."""
