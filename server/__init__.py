"""berth server: router, supervisor, meter, admin API. Never imports torch."""
